/* The plain C loop the oracle benchmark measures the library against: the mean logistic
 * gradient of an affine model, row by row, as anyone would write it, in double and float.
 * Built by build.rs at -O3 -march=native. */
#include <math.h>
#include <stddef.h>

#define LOGISTIC_GRAD(NAME, T, EXP)                                                        \
    void NAME(const T *rows, const T *targets, size_t n, size_t d, const T *y, T *out) {  \
        for (size_t j = 0; j <= d; j++) out[j] = (T)0;                                     \
        for (size_t i = 0; i < n; i++) {                                                   \
            const T *a = rows + i * d;                                                     \
            T z = y[d];                                                                    \
            for (size_t j = 0; j < d; j++) z += a[j] * y[j];                               \
            T r = (T)1 / ((T)1 + EXP(-z)) - targets[i];                                    \
            for (size_t j = 0; j < d; j++) out[j] += r * a[j];                             \
            out[d] += r;                                                                   \
        }                                                                                  \
        for (size_t j = 0; j <= d; j++) out[j] /= (T)n;                                    \
    }

LOGISTIC_GRAD(logistic_grad_f64, double, exp)
LOGISTIC_GRAD(logistic_grad_f32, float, expf)
