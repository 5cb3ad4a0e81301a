/* The plain C loop the oracle benchmark measures the library against: the mean logistic
 * gradient of an affine model, row by row, as anyone would write it. Built by build.rs at
 * -O3 -march=native. */
#include <math.h>
#include <stddef.h>

void logistic_grad_f64(const double *rows, const double *targets, size_t n, size_t d,
                       const double *y, double *out) {
    for (size_t j = 0; j <= d; j++) out[j] = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double *a = rows + i * d;
        double z = y[d];
        for (size_t j = 0; j < d; j++) z += a[j] * y[j];
        double r = 1.0 / (1.0 + exp(-z)) - targets[i];
        for (size_t j = 0; j < d; j++) out[j] += r * a[j];
        out[d] += r;
    }
    for (size_t j = 0; j <= d; j++) out[j] /= (double)n;
}

void logistic_grad_f32(const float *rows, const float *targets, size_t n, size_t d,
                       const float *y, float *out) {
    for (size_t j = 0; j <= d; j++) out[j] = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float *a = rows + i * d;
        float z = y[d];
        for (size_t j = 0; j < d; j++) z += a[j] * y[j];
        float r = 1.0f / (1.0f + expf(-z)) - targets[i];
        for (size_t j = 0; j < d; j++) out[j] += r * a[j];
        out[d] += r;
    }
    for (size_t j = 0; j <= d; j++) out[j] /= (float)n;
}
