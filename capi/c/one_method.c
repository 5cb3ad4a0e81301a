/* The smallest program that tunes with one method (chosen at compile time with -DMETHOD=...,
 * default bl_method_nbo_gd) on the built-in logistic regression: linked with --gc-sections it
 * shows the flash one method costs. `.ci/capi` builds it for the Cortex-M4F per method and
 * prints the sizes. */
#include <stdint.h>

#include "bilevel.h"

#ifndef METHOD
#define METHOD bl_method_nbo_gd
#endif

#define N 8
static float features[N][BL_LOGREG_FEATURES], labels[N];
static _Alignas(16) uint8_t memory[16384];

int main(void) {
    for (int i = 0; i < N; i++) {
        features[i][0] = (float)i - 3.5f;
        labels[i] = (float)(i % 3 == 0);
    }
    BlProblem p = {0};
    p.kind = BL_PROBLEM_LOGISTIC;
    p.data = (BlDataset){&features[0][0], labels, N, &features[0][0], labels, N};
    const float x0[1] = {0.0f};
    BlConfig cfg;
    if (bl_default_config(&METHOD, &p, x0, 1, &cfg) != BL_OK) return 1;
    if (bl_solver_init(memory, sizeof memory, &cfg, &p, x0, 1) != BL_OK) return 1;
    BlReport r;
    uint32_t s = bl_run(memory, &p, 10, -1.0f, &r);
    return s == BL_OK ? 0 : 1;
}
