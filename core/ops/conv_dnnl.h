/* 2-D convolution on oneDNN (forward, backward-data, backward-weights), for core/ops/conv.c.
 * Only built with FT_HAVE_DNNL. Tensors are float32, contiguous NCHW at this boundary (weights
 * [O, C/groups, kH, kW]); inside a primitive oneDNN may use its own blocked layouts, reached
 * through reorders. */
#ifndef FT_CONV_DNNL_H
#define FT_CONV_DNNL_H

#include <stdint.h>

/* One convolution's geometry and algorithm: the cache key of its primitives (with the thread
 * count). */
typedef struct {
    int64_t n, c, h, w;                 /* input [N,C,H,W] */
    int64_t o, kh, kw;                  /* weight [O, C/groups, kH, kW] */
    int64_t oh, ow;                     /* output [N,O,oH,oW] */
    int64_t sh, sw, ph, pw, dh, dw;     /* stride, padding (both sides), dilation (>= 1) */
    int64_t groups;
    int64_t winograd;                   /* 1: Winograd F(4x4, 3x3) instead of the direct algorithm */
} conv_dnnl_geom;

/* Return values of the functions below: done, failed (ft_set_error says why), or a geometry
 * oneDNN has no kernel for with that algorithm (nothing written; the caller tries the direct
 * algorithm or the im2col path). A geometry found unsupported stays known as such. */
enum { CONV_DNNL_OK = 0, CONV_DNNL_ERROR = -1, CONV_DNNL_UNSUPPORTED = 1 };

/* y = conv(x, w) + bias; bias [O] or NULL. */
int conv_dnnl_forward(const conv_dnnl_geom *g, const float *x, const float *w, const float *bias,
                      float *y);

/* The gradients from gy [N,O,oH,oW]: gx (of the input, from w) when not NULL, gw (of the
 * weight, from x) when not NULL, and with gw, gb [O] (of the bias) when not NULL; each is
 * overwritten. x or w may be NULL where the gradient that needs it is not asked for. */
int conv_dnnl_backward(const conv_dnnl_geom *g, const float *x, const float *w, const float *gy,
                       float *gx, float *gw, float *gb);

#endif
