/* Tunes two problems through the bilevel C API and prints the results with their exact bits:
 *   1. a quadratic bilevel problem written here as callbacks (NBO-GD);
 *   2. the built-in logistic regression on a data set generated here (one method of every
 *      family: qNBO, SHINE, NBO, NSBO, AID/AmIGO, ITD, SOBA, stocBiO, F2SA, PZOBO);
 *   3. the built-in ridge regression on the same rows with real targets (NBO-GD).
 * The same source runs on the host (gcc) and on a Cortex-M4F under QEMU (arm-none-eabi-gcc);
 * both print the same bits as the Rust API (tests/examples/capi_reference.rs). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bilevel.h"

/* ---- 1. the quadratic: g = ½ yᵀA y − yᵀB x + cᵀy,  f = ½‖y − t‖² + (ρ/2)‖x‖² ---- */
#define QDX 2
#define QDY 3
static const float A[QDY][QDY] = {{4.0f, 1.0f, 0.0f}, {1.0f, 3.0f, 0.5f}, {0.0f, 0.5f, 2.0f}};
static const float B[QDY][QDX] = {{1.0f, 0.0f}, {0.5f, -1.0f}, {0.0f, 2.0f}};
static const float C[QDY] = {0.1f, -0.2f, 0.3f};
static const float TARGET[QDY] = {1.0f, -1.0f, 0.5f};
static const float RHO = 0.1f;

struct calls { unsigned long lower_grad; };

static int32_t q_lower_grad(void *ctx, const float *x, const float *y, uint32_t start, uint32_t len, float *out) {
    (void)start; (void)len;
    ((struct calls *)ctx)->lower_grad++;
    for (int i = 0; i < QDY; i++) {
        float s = 0.0f;
        for (int j = 0; j < QDY; j++) s += A[i][j] * y[j];
        float bx = 0.0f;
        for (int k = 0; k < QDX; k++) bx += B[i][k] * x[k];
        out[i] = s - bx + C[i];
    }
    return 0;
}

static int32_t q_upper_grad(void *ctx, const float *x, const float *y, uint32_t start, uint32_t len, float *gx, float *gy) {
    (void)ctx; (void)start; (void)len;
    for (int k = 0; k < QDX; k++) gx[k] = RHO * x[k];
    for (int i = 0; i < QDY; i++) gy[i] = y[i] - TARGET[i];
    return 0;
}

static int32_t q_hvp(void *ctx, const float *x, const float *y, const float *v, uint32_t start, uint32_t len, float *out) {
    (void)ctx; (void)x; (void)y; (void)start; (void)len;
    for (int i = 0; i < QDY; i++) {
        float s = 0.0f;
        for (int j = 0; j < QDY; j++) s += A[i][j] * v[j];
        out[i] = s;
    }
    return 0;
}

static int32_t q_cross(void *ctx, const float *x, const float *y, const float *v, uint32_t start, uint32_t len, float *out) {
    (void)ctx; (void)x; (void)y; (void)start; (void)len;
    for (int k = 0; k < QDX; k++) {
        float s = 0.0f;
        for (int i = 0; i < QDY; i++) s += B[i][k] * v[i];
        out[k] = -s;
    }
    return 0;
}

/* A callback that fails once it has been called `fail_after` times. */
static int32_t failing_lower_grad(void *ctx, const float *x, const float *y, uint32_t start, uint32_t len, float *out) {
    struct calls *c = ctx;
    if (c->lower_grad >= 3) return 42;
    return q_lower_grad(ctx, x, y, start, len, out);
}

/* ---- 2. logistic regression on generated data ---- */
#define NTRAIN 96
#define NVAL 64
#define NFEAT 4 /* used columns of BL_LOGREG_FEATURES; the rest stay 0 */
static float train_x[NTRAIN][BL_LOGREG_FEATURES], train_t[NTRAIN];
static float val_x[NVAL][BL_LOGREG_FEATURES], val_t[NVAL];

/* Integer hash → features in [-2, 2] and labels from a noisy linear rule: exact in float on
 * every target, so C and Rust build the same data. */
static uint32_t hash(uint32_t v) {
    v ^= v >> 16; v *= 0x7feb352dU; v ^= v >> 15; v *= 0x846ca68bU; v ^= v >> 16;
    return v;
}
static void make_rows(float (*x)[BL_LOGREG_FEATURES], float *t, int n, uint32_t salt) {
    static const int32_t w[NFEAT] = {3, -2, 1, 0};
    for (int i = 0; i < n; i++) {
        int32_t score = (int32_t)(hash(salt + 1000u * (uint32_t)i) % 8001u) - 4000; /* noise */
        for (int j = 0; j < BL_LOGREG_FEATURES; j++) x[i][j] = 0.0f;
        for (int j = 0; j < NFEAT; j++) {
            int32_t q = (int32_t)(hash(salt + 1000u * (uint32_t)i + 1u + (uint32_t)j) % 2001u) - 1000;
            x[i][j] = (float)q / 500.0f;
            score += w[j] * q;
        }
        t[i] = score > 0 ? 1.0f : 0.0f;
    }
}

static void print_bits(const char *name, const float *v, int n) {
    printf("%s", name);
    for (int i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &v[i], sizeof b);
        printf(" %08lx", (unsigned long)b);
    }
    printf("\n");
}

/* Solver memory: bl_solver_size(method) bytes aligned to bl_solver_align() (checked below). */
static _Alignas(16) uint8_t memory[16384];

static int check(const char *what, uint32_t status) {
    if (status != BL_OK) {
        printf("%s: %s (%lu)\n", what, bl_status_str(status), (unsigned long)status);
        return 1;
    }
    return 0;
}

static int fits(const BlMethod *method) {
    if (bl_solver_size(method) > sizeof memory || bl_solver_align() > 16) {
        printf("solver memory too small for %s: need %lu bytes\n", bl_method_name(method),
               (unsigned long)bl_solver_size(method));
        return 0;
    }
    return 1;
}

int main(void) {
    printf("bilevel C API %lu, solver memory of nbo-gd %lu bytes\n", (unsigned long)bl_version(),
           (unsigned long)bl_solver_size(&bl_method_nbo_gd));

    /* 1. quadratic through callbacks, NBO-GD */
    struct calls calls = {0};
    BlProblem quad;
    memset(&quad, 0, sizeof quad);
    quad.kind = BL_PROBLEM_CALLBACKS;
    quad.callbacks = (BlCallbacks){&calls, QDX, QDY, 0, 0, 5.0f, q_lower_grad, q_upper_grad, q_hvp, q_cross};
    BlConfig cfg;
    const float x0[QDX] = {0.0f, 0.0f};
    if (!fits(&bl_method_nbo_gd)) return 2;
    if (check("config", bl_default_config(&bl_method_nbo_gd, &quad, x0, QDX, &cfg))) return 1;
    if (check("lower_step", bl_config_set(&cfg, "lower_step", 0.2f))) return 1;
    cfg.outer_step = 0.3f;
    cfg.inner_tracking = 0.0f;
    if (check("init", bl_solver_init(memory, sizeof memory, &cfg, &quad, x0, QDX))) return 1;
    BlReport report;
    uint32_t status = bl_run(memory, &quad, 400, 1e-6f, &report);
    if (status != BL_OK && status != BL_ERR_BUDGET) return check("run", status);
    float x[QDX], y[QDY];
    bl_solver_x(memory, x, QDX);
    bl_solver_y(memory, y, QDY);
    printf("quadratic nbo-gd: %lu iterations, |h| = %g, x = (%g, %g), %lu gradient callbacks\n",
           (unsigned long)report.iterations, (double)report.hypergradient_norm, (double)x[0], (double)x[1],
           calls.lower_grad);
    print_bits("bits quadratic-nbo-gd x", x, QDX);
    print_bits("bits quadratic-nbo-gd y", y, QDY);

    /* a failing callback stops the step with its code and keeps the last good state */
    BlProblem failing = quad;
    struct calls fail_calls = {0};
    failing.callbacks.ctx = &fail_calls;
    failing.callbacks.lower_grad = failing_lower_grad;
    if (check("init", bl_solver_init(memory, sizeof memory, &cfg, &failing, x0, QDX))) return 1;
    status = bl_run(memory, &failing, 10, -1.0f, &report);
    bl_solver_x(memory, x, QDX);
    printf("failing callback: %s after %lu good steps\n", bl_status_str(status), (unsigned long)report.iterations);
    print_bits("bits failing x", x, QDX);
    if (status != BL_ERR_CALLBACK) return 1;

    /* 2. built-in logistic regression: NBO-GD, then NSBO-SGD in minibatches of 16 */
    make_rows(train_x, train_t, NTRAIN, 1u);
    make_rows(val_x, val_t, NVAL, 777777u);
    BlProblem logreg;
    memset(&logreg, 0, sizeof logreg);
    logreg.kind = BL_PROBLEM_LOGISTIC;
    logreg.data = (BlDataset){&train_x[0][0], train_t, NTRAIN, &val_x[0][0], val_t, NVAL};
    const BlMethod *methods[] = {&bl_method_nbo_gd,  &bl_method_nsbo_sgd, &bl_method_qnbo_lbfgs, &bl_method_qnbo_sr1,
                                 &bl_method_shine,   &bl_method_aid_cg,   &bl_method_amigo_gd,   &bl_method_itd,
                                 &bl_method_soba,    &bl_method_stocbio,  &bl_method_f2sa,       &bl_method_pzobo};
    const int n_methods = (int)(sizeof methods / sizeof methods[0]);
    for (int m = 0; m < n_methods; m++) {
        const char *name = bl_method_name(methods[m]);
        const float lam0[1] = {-2.0f};
        if (!fits(methods[m])) return 2;
        if (check("config", bl_default_config(methods[m], &logreg, lam0, 1, &cfg))) return 1;
        /* the steps the command line would take are 1/L; these runs pin their own */
        bl_config_set(&cfg, "lower_step", 0.25f);
        bl_config_set(&cfg, "warmup_step", 0.25f);
        bl_config_set(&cfg, "rho", 0.25f);
        bl_config_set(&cfg, "batch_size", 16.0f);
        cfg.outer_step = 2.0f;
        cfg.inner_tracking = 0.0f;
        cfg.use_bounds = 1;
        if (check("init", bl_solver_init(memory, sizeof memory, &cfg, &logreg, lam0, 1))) return 1;
        status = bl_run(memory, &logreg, 300, 1e-5f, &report);
        if (status != BL_OK && status != BL_ERR_BUDGET) return check(name, status);
        float lam[1], w[BL_MAX_DY];
        bl_solver_x(memory, lam, 1);
        bl_solver_y(memory, w, BL_MAX_DY);
        printf("logistic %s: %s after %lu iterations, ln lambda = %g, |h| = %g, %lu gradients, %lu Hessian products, "
               "%lu bytes\n",
               name, status == BL_OK ? "converged" : "budget", (unsigned long)report.iterations, (double)lam[0],
               (double)report.hypergradient_norm, (unsigned long)report.lower_grad_calls,
               (unsigned long)report.lower_hvp_calls, (unsigned long)bl_solver_size(methods[m]));
        char label[64];
        snprintf(label, sizeof label, "bits logistic-%s", name);
        print_bits(label, lam, 1);
        print_bits(label, w, NFEAT);
    }
    /* the defaults alone: lower steps 1/L, the adaptive outer step, inner tracking, and bl_run's
     * tolerance */
    {
        const float lam0[1] = {0.0f};
        if (check("config", bl_default_config(&bl_method_nbo_cg, &logreg, lam0, 1, &cfg))) return 1;
        if (check("init", bl_solver_init(memory, sizeof memory, &cfg, &logreg, lam0, 1))) return 1;
        status = bl_run(memory, &logreg, 300, 1e-5f, &report);
        float lam[1];
        bl_solver_x(memory, lam, 1);
        printf("logistic nbo-cg, default configuration: %s after %lu iterations, ln lambda = %g\n",
               bl_status_str(status), (unsigned long)report.iterations, (double)lam[0]);
        print_bits("bits logistic-defaults", lam, 1);
        if (status != BL_OK) return 1;
    }

    /* 3. built-in ridge regression: the same rows, targets a noisy linear function */
    static float ridge_train_t[NTRAIN], ridge_val_t[NVAL];
    for (int i = 0; i < NTRAIN; i++)
        ridge_train_t[i] = train_x[i][0] - 0.5f * train_x[i][1] + 2.0f * (train_t[i] - 0.5f);
    for (int i = 0; i < NVAL; i++)
        ridge_val_t[i] = val_x[i][0] - 0.5f * val_x[i][1];
    BlProblem ridge;
    memset(&ridge, 0, sizeof ridge);
    ridge.kind = BL_PROBLEM_RIDGE;
    ridge.data = (BlDataset){&train_x[0][0], ridge_train_t, NTRAIN, &val_x[0][0], ridge_val_t, NVAL};
    const float ridge_lam0[1] = {0.0f};
    if (check("config", bl_default_config(&bl_method_nbo_gd, &ridge, ridge_lam0, 1, &cfg))) return 1;
    if (check("lower_step", bl_config_set(&cfg, "lower_step", 0.2f))) return 1;
    cfg.outer_step = 1.0f;
    cfg.inner_tracking = 0.0f;
    cfg.use_bounds = 1;
    if (check("init", bl_solver_init(memory, sizeof memory, &cfg, &ridge, ridge_lam0, 1))) return 1;
    status = bl_run(memory, &ridge, 300, 1e-6f, &report);
    if (status != BL_OK && status != BL_ERR_BUDGET) return check("run", status);
    float ridge_lam[1], ridge_w[BL_MAX_DY];
    bl_solver_x(memory, ridge_lam, 1);
    bl_solver_y(memory, ridge_w, BL_MAX_DY);
    printf("ridge nbo-gd: %lu iterations, ln lambda = %g, |h| = %g\n", (unsigned long)report.iterations,
           (double)ridge_lam[0], (double)report.hypergradient_norm);
    print_bits("bits ridge-nbo-gd", ridge_lam, 1);
    print_bits("bits ridge-nbo-gd", ridge_w, NFEAT);
    return 0;
}
