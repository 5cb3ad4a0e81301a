/* Feeds bad arguments to every entry point of the bilevel C API and checks the status codes,
 * and that a failing step leaves the solver memory byte-for-byte unchanged. Exit 0 when every
 * check holds; otherwise prints each failed check and exits 1. With `--table`, also prints
 * each check that held as a Markdown row (docs/robustness-c.md). Built and run by .ci/capi on
 * the host and under QEMU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bilevel.h"

static int failures;
static int table; /* print each check that held as a Markdown row */
static const char *given = "";  /* what the next checks feed in, for the table */
#define EXPECT(call, want)                                                                       \
    do {                                                                                         \
        uint32_t got_ = (call);                                                                  \
        if (got_ != (want)) {                                                                    \
            printf("FAIL line %d: %s gave %lu (%s), want %s\n", __LINE__, #call,                \
                   (unsigned long)got_, bl_status_str(got_), #want);                              \
            failures++;                                                                          \
        } else if (table) {                                                                      \
            printf("| %s | `%s` | `%s` (%s) |\n", given, #call, #want, bl_status_str(got_));    \
        }                                                                                        \
    } while (0)

static float bad_value; /* set to NaN or ±inf by the tests */
static int32_t grad(void *ctx, const float *x, const float *y, uint32_t s, uint32_t l, float *out) {
    (void)ctx; (void)s; (void)l;
    out[0] = 2.0f * y[0] - x[0];
    return 0;
}
static int32_t upper(void *ctx, const float *x, const float *y, uint32_t s, uint32_t l, float *gx, float *gy) {
    (void)ctx; (void)x; (void)s; (void)l;
    gx[0] = 0.0f;
    gy[0] = y[0] - 1.0f;
    return 0;
}
static int32_t bad_grad(void *ctx, const float *x, const float *y, uint32_t s, uint32_t l, float *out) {
    (void)ctx; (void)x; (void)y; (void)s; (void)l;
    out[0] = bad_value;
    return 0;
}
static int32_t failing_grad(void *ctx, const float *x, const float *y, uint32_t s, uint32_t l, float *out) {
    (void)ctx; (void)x; (void)y; (void)s; (void)l; (void)out;
    return -5;
}

static _Alignas(16) uint8_t memory[8192];
static _Alignas(16) uint8_t before[8192];

int main(int argc, char **argv) {
    table = argc > 1 && strcmp(argv[1], "--table") == 0;
    if (table) printf("| given | call | status |\n|---|---|---|\n");
    BlConfig cfg;
    BlReport report;
    float x0[1] = {0.0f}, out[BL_MAX_DY];

    /* names */
    if (bl_status_str(BL_OK) == NULL || bl_status_str(9999) == NULL) { printf("FAIL: null status string\n"); failures++; }
    if (strcmp(bl_status_str(BL_ERR_NULL), "null pointer") != 0) { printf("FAIL: status name\n"); failures++; }

    /* methods */
    if (strcmp(bl_method_name(&bl_method_nbo_gd), "nbo-gd") != 0 || strcmp(bl_method_name(NULL), "") != 0) {
        printf("FAIL: method name\n");
        failures++;
    }
    if (bl_solver_size(NULL) != 0 || bl_solver_size(&bl_method_nbo_gd) == 0) { printf("FAIL: solver size\n"); failures++; }

    BlProblem p;
    memset(&p, 0, sizeof p);
    p.kind = BL_PROBLEM_CALLBACKS;
    p.callbacks = (BlCallbacks){NULL, 1, 1, 0, 0, 2.0f, grad, upper, NULL, NULL};

    /* bl_default_config and bl_config_set */
    EXPECT(bl_default_config(&bl_method_nbo_gd, &p, x0, 1, NULL), BL_ERR_NULL);
    EXPECT(bl_default_config(NULL, &p, x0, 1, &cfg), BL_ERR_NULL);
    EXPECT(bl_default_config(&bl_method_nbo_gd, NULL, x0, 1, &cfg), BL_ERR_NULL);
    EXPECT(bl_default_config(&bl_method_nbo_gd, &p, NULL, 1, &cfg), BL_ERR_NULL);
    EXPECT(bl_default_config(&bl_method_nbo_gd, &p, x0, 2, &cfg), BL_ERR_SIZE);
    BlProblem unknown_smoothness = p;
    unknown_smoothness.callbacks.lower_smoothness = 0.0f;
    given = "callbacks without lower_smoothness";
    EXPECT(bl_default_config(&bl_method_nbo_gd, &unknown_smoothness, x0, 1, &cfg), BL_ERR_CONFIG);
    given = "";
    EXPECT(bl_default_config(&bl_method_nbo_gd, &p, x0, 1, &cfg), BL_OK);
    if (cfg.settings[0] != 0.5f) { printf("FAIL: default lower step %g, want 1/L = 0.5\n", (double)cfg.settings[0]); failures++; }
    EXPECT(bl_config_set(NULL, "lower_step", 0.1f), BL_ERR_NULL);
    EXPECT(bl_config_set(&cfg, NULL, 0.1f), BL_ERR_NULL);
    given = "key \"momentum\" that nbo-gd lacks";
    EXPECT(bl_config_set(&cfg, "momentum", 0.9f), BL_ERR_KIND);
    const BlConfig kept = cfg;
    given = "steps = 1.5";
    EXPECT(bl_config_set(&cfg, "steps", 1.5f), BL_ERR_CONFIG);
    given = "steps = -1";
    EXPECT(bl_config_set(&cfg, "steps", -1.0f), BL_ERR_CONFIG);
    if (memcmp(&kept, &cfg, sizeof cfg) != 0) { printf("FAIL: a refused setting changed the config\n"); failures++; }
    given = "";
    EXPECT(bl_config_set(&cfg, "steps", 2.0f), BL_OK);

    /* bl_solver_init: pointers, sizes, alignment, dimensions, callbacks, kinds */
    EXPECT(bl_solver_init(NULL, sizeof memory, &cfg, &p, x0, 1), BL_ERR_NULL);
    EXPECT(bl_solver_init(memory, sizeof memory, NULL, &p, x0, 1), BL_ERR_NULL);
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, NULL, x0, 1), BL_ERR_NULL);
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &p, NULL, 1), BL_ERR_NULL);
    EXPECT(bl_solver_init(memory, bl_solver_size(&bl_method_nbo_gd) - 1, &cfg, &p, x0, 1), BL_ERR_SIZE);
    EXPECT(bl_solver_init(memory + 1, sizeof memory - 1, &cfg, &p, x0, 1), BL_ERR_SIZE);
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &p, x0, 2), BL_ERR_SIZE);
    BlProblem q = p;
    q.callbacks.dx = 0;
    given = "dx = 0";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &q, x0, 0), BL_ERR_SIZE);
    q = p;
    q.callbacks.dy = BL_MAX_DY + 1;
    given = "dy above BL_MAX_DY";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &q, x0, 1), BL_ERR_SIZE);
    q = p;
    q.callbacks.lower_grad = NULL;
    given = "no lower_grad callback";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &q, x0, 1), BL_ERR_NULL);
    q = p;
    q.kind = 77;
    given = "problem kind 77";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &q, x0, 1), BL_ERR_KIND);

    /* configuration values: zero, negative, NaN and infinite steps (set by key or written into
     * the settings directly); no method; NaN x0 */
    const float bad_steps[4] = {0.0f, -0.1f, NAN, INFINITY};
    const char *outer_names[4] = {"outer radius 0 (adaptive step)", "outer step -0.1", "outer step NaN",
                                  "outer step +inf"};
    const char *inner_names[4] = {"lower_step 0", "lower_step -0.1", "lower_step NaN", "lower_step +inf"};
    for (int i = 0; i < 4; i++) {
        BlConfig c = cfg;
        if (i == 0)
            c.outer_radius = 0.0f;
        else
            c.outer_step = bad_steps[i];
        given = outer_names[i];
        EXPECT(bl_solver_init(memory, sizeof memory, &c, &p, x0, 1), BL_ERR_CONFIG);
        c = cfg;
        given = inner_names[i];
        EXPECT(bl_config_set(&c, "lower_step", bad_steps[i]), BL_ERR_CONFIG);
        c.settings[0] = bad_steps[i];
        EXPECT(bl_solver_init(memory, sizeof memory, &c, &p, x0, 1), BL_ERR_CONFIG);
    }
    const float bad_tracking[3] = {-0.1f, NAN, INFINITY};
    const char *tracking_names[3] = {"inner_tracking -0.1", "inner_tracking NaN", "inner_tracking +inf"};
    for (int i = 0; i < 3; i++) {
        BlConfig c = cfg;
        c.inner_tracking = bad_tracking[i];
        given = tracking_names[i];
        EXPECT(bl_solver_init(memory, sizeof memory, &c, &p, x0, 1), BL_ERR_CONFIG);
    }
    BlConfig c = cfg;
    c.method = NULL;
    given = "no method";
    EXPECT(bl_solver_init(memory, sizeof memory, &c, &p, x0, 1), BL_ERR_NULL);
    c = cfg;
    c.use_bounds = 1;
    c.lower_bound = 1.0f;
    c.upper_bound = -1.0f;
    given = "bounds [1, -1]";
    EXPECT(bl_solver_init(memory, sizeof memory, &c, &p, x0, 1), BL_ERR_CONFIG);
    const float nan_x0[1] = {NAN};
    given = "x0 = NaN";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &p, nan_x0, 1), BL_ERR_CONFIG);

    /* built-in logistic: null arrays, no rows, labels not 0/1, NaN features, bad batch size */
    static float feats[4][BL_LOGREG_FEATURES], labels[4] = {0.0f, 1.0f, 0.0f, 1.0f};
    BlProblem lr;
    memset(&lr, 0, sizeof lr);
    lr.kind = BL_PROBLEM_LOGISTIC;
    lr.data = (BlDataset){&feats[0][0], labels, 4, &feats[0][0], labels, 4};
    for (int i = 0; i < 4; i++) feats[i][0] = (float)i - 1.5f;
    given = "built-in logistic, 4 rows";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &lr, x0, 1), BL_OK);
    BlProblem lrb = lr;
    lrb.data.train_features = NULL;
    given = "null training features";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &lrb, x0, 1), BL_ERR_NULL);
    lrb = lr;
    lrb.data.n_val = 0;
    given = "no validation rows";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &lrb, x0, 1), BL_ERR_DATA);
    labels[2] = 2.0f;
    given = "label 2";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &lr, x0, 1), BL_ERR_DATA);
    labels[2] = 0.0f;
    feats[1][3] = NAN;
    given = "NaN feature";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &lr, x0, 1), BL_ERR_DATA);
    feats[1][3] = 0.0f;
    lrb = lr;
    lrb.kind = BL_PROBLEM_LOGISTIC_PER_FEATURE;
    given = "per-feature logistic with dx = 1";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &lrb, x0, 1), BL_ERR_SIZE);
    BlProblem rp = lr;
    rp.kind = BL_PROBLEM_RIDGE;
    given = "built-in ridge";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &rp, x0, 1), BL_OK);
    labels[3] = INFINITY;
    given = "infinite ridge target";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &rp, x0, 1), BL_ERR_DATA);
    labels[3] = 1.0f;
    given = "";
    BlConfig sc;
    EXPECT(bl_default_config(&bl_method_nsbo_sgd, &lr, x0, 1, &sc), BL_OK);
    given = "NSBO-SGD, batch size 0";
    EXPECT(bl_config_set(&sc, "batch_size", 0.0f), BL_ERR_CONFIG);
    sc.settings[2] = 0.0f;
    EXPECT(bl_solver_init(memory, sizeof memory, &sc, &lr, x0, 1), BL_ERR_CONFIG);
    BlConfig big;
    given = "";
    EXPECT(bl_default_config(&bl_method_saba, &lr, x0, 1, &big), BL_OK);
    given = "SABA in memory smaller than bl_solver_size";
    EXPECT(bl_solver_init(memory, sizeof memory, &big, &lr, x0, 1), BL_ERR_SIZE);

    /* uninitialized memory, null arguments, mismatched problems */
    memset(memory, 0, sizeof memory);
    given = "zeroed solver memory";
    EXPECT(bl_step(memory, &p, &report), BL_ERR_STATE);
    EXPECT(bl_solver_x(memory, out, 1), BL_ERR_STATE);
    given = "";
    EXPECT(bl_step(NULL, &p, &report), BL_ERR_NULL);
    given = "";
    EXPECT(bl_solver_init(memory, sizeof memory, &cfg, &p, x0, 1), BL_OK);
    EXPECT(bl_step(memory, NULL, &report), BL_ERR_NULL);
    EXPECT(bl_run(memory, &p, 10, NAN, &report), BL_ERR_CONFIG);
    given = "solver set up for another problem";
    EXPECT(bl_step(memory, &lr, &report), BL_ERR_SIZE);
    given = "";
    EXPECT(bl_solver_x(memory, NULL, 1), BL_ERR_NULL);
    EXPECT(bl_solver_x(memory, out, 2), BL_ERR_SIZE);
    EXPECT(bl_solver_y(memory, NULL, 1), BL_ERR_NULL);
    EXPECT(bl_solver_y(memory, out, 3), BL_ERR_SIZE);
    EXPECT(bl_step(memory, &p, NULL), BL_OK); /* the report is optional */
    EXPECT(bl_run(memory, &p, 3, -1.0f, &report), BL_OK);
    if (report.iterations != 4) { printf("FAIL: %lu iterations, want 4\n", (unsigned long)report.iterations); failures++; }

    /* non-finite callback output and callback failure: the error, and memory unchanged */
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    const char *bad_names[3] = {"NaN", "+inf", "-inf"};
    const int rows = table;
    table = 0; /* one row per value below instead */
    for (int i = 0; i < 3; i++) {
        bad_value = bad[i];
        BlProblem b = p;
        b.callbacks.lower_grad = bad_grad;
        memcpy(before, memory, sizeof memory);
        BlReport untouched = report;
        const int failed = failures;
        EXPECT(bl_step(memory, &b, &report), BL_ERR_NON_FINITE);
        if (memcmp(before, memory, sizeof memory) != 0) { printf("FAIL: state changed by a non-finite output\n"); failures++; }
        if (memcmp(&untouched, &report, sizeof report) != 0) { printf("FAIL: report written on error\n"); failures++; }
        if (rows && failures == failed)
            printf("| `lower_grad` callback writes %s | `bl_step(memory, &b, &report)` | `BL_ERR_NON_FINITE` (%s); solver memory and report byte-identical |\n",
                   bad_names[i], bl_status_str(BL_ERR_NON_FINITE));
    }
    BlProblem f = p;
    f.callbacks.lower_grad = failing_grad;
    memcpy(before, memory, sizeof memory);
    const int failed = failures;
    EXPECT(bl_step(memory, &f, &report), BL_ERR_CALLBACK);
    if (memcmp(before, memory, sizeof memory) != 0) { printf("FAIL: state changed by a failing callback\n"); failures++; }
    if (rows && failures == failed)
        printf("| `lower_grad` callback returns -5 | `bl_step(memory, &f, &report)` | `BL_ERR_CALLBACK` (%s); solver memory byte-identical |\n",
               bl_status_str(BL_ERR_CALLBACK));
    table = rows;
    /* and the solver continues from there */
    EXPECT(bl_step(memory, &p, &report), BL_OK);
    if (report.iterations != 5) { printf("FAIL: %lu iterations, want 5\n", (unsigned long)report.iterations); failures++; }

    if (failures == 0 && !table) printf("bad_args: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
