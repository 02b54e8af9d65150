// Deformable convolution: geometry, argument checks and the bilinear sampling math
// shared by the CPU and CUDA kernels (host/device inline templates).
//
// Notation: N images, C input channels split into G weight groups and D deformable
// groups, K = kh * kw kernel points, P = out_h * out_w output positions. The kernels
// process output positions in chunks of L "columns" q = n * P + p; the column buffer
// holds, for every input channel c and kernel point k, the row (c * K + k) of L samples.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DN_HOST_DEVICE inline
#endif

namespace densenets {

// Sizes of one deformable convolution; 64-bit so that products index large tensors.
struct DeformGeometry {
  int64_t batch, channels, height, width;
  int64_t out_channels, out_h, out_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups, deform_groups;

  DN_HOST_DEVICE int64_t points() const { return kernel_h * kernel_w; }              // K
  DN_HOST_DEVICE int64_t positions() const { return out_h * out_w; }                 // P
  DN_HOST_DEVICE int64_t columns() const { return batch * out_h * out_w; }           // N * P
  DN_HOST_DEVICE int64_t rows() const { return channels * kernel_h * kernel_w; }     // C * K
  DN_HOST_DEVICE int64_t plane() const { return height * width; }                    // H * W
};

// Checks what the Python wrapper checks, for direct callers of torch.ops.densenets.
inline DeformGeometry make_geometry(const at::Tensor& input, const at::Tensor& offset,
                                    const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                                    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                    int64_t dilation_h, int64_t dilation_w) {
  TORCH_CHECK(input.dim() == 4, "deform_conv2d: input must be 4-D, got ", input.sizes());
  TORCH_CHECK(offset.dim() == 4, "deform_conv2d: offset must be 4-D, got ", offset.sizes());
  TORCH_CHECK(weight.dim() == 4, "deform_conv2d: weight must be 4-D, got ", weight.sizes());
  TORCH_CHECK(offset.device() == input.device() && weight.device() == input.device(),
              "deform_conv2d: input, offset and weight must be on one device, got ", input.device(), ", ",
              offset.device(), ", ", weight.device());
  TORCH_CHECK(offset.scalar_type() == input.scalar_type() && weight.scalar_type() == input.scalar_type(),
              "deform_conv2d: input, offset and weight must have one dtype, got ", input.scalar_type(), ", ",
              offset.scalar_type(), ", ", weight.scalar_type());
  TORCH_CHECK(stride_h > 0 && stride_w > 0 && dilation_h > 0 && dilation_w > 0 && pad_h >= 0 && pad_w >= 0,
              "deform_conv2d: need stride > 0, dilation > 0, padding >= 0");
  DeformGeometry g;
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.out_channels = weight.size(0);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  g.stride_h = stride_h;
  g.stride_w = stride_w;
  g.pad_h = pad_h;
  g.pad_w = pad_w;
  g.dilation_h = dilation_h;
  g.dilation_w = dilation_w;
  g.out_h = (g.height + 2 * pad_h - dilation_h * (g.kernel_h - 1) - 1) / stride_h + 1;
  g.out_w = (g.width + 2 * pad_w - dilation_w * (g.kernel_w - 1) - 1) / stride_w + 1;
  TORCH_CHECK(g.out_h > 0 && g.out_w > 0, "deform_conv2d: input ", g.height, "x", g.width,
              " is smaller than the dilated kernel");
  TORCH_CHECK(weight.size(1) > 0 && g.channels % weight.size(1) == 0,
              "deform_conv2d: weight.size(1)=", weight.size(1), " must divide the input channels ", g.channels);
  g.groups = g.channels / weight.size(1);
  TORCH_CHECK(g.out_channels % g.groups == 0, "deform_conv2d: weight.size(0)=", g.out_channels,
              " must be divisible by the groups ", g.groups);
  const int64_t k = g.points();
  TORCH_CHECK(offset.size(1) > 0 && offset.size(1) % (2 * k) == 0,
              "deform_conv2d: offset has ", offset.size(1), " channels, need a positive multiple of 2 * ", k);
  g.deform_groups = offset.size(1) / (2 * k);
  TORCH_CHECK(g.channels % g.deform_groups == 0, "deform_conv2d: the ", g.deform_groups,
              " deformable groups must divide the input channels ", g.channels);
  TORCH_CHECK(offset.size(0) == g.batch && offset.size(2) == g.out_h && offset.size(3) == g.out_w,
              "deform_conv2d: offset shape ", offset.sizes(), " does not match batch ", g.batch,
              " and output size ", g.out_h, "x", g.out_w);
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK(m.device() == input.device() && m.scalar_type() == input.scalar_type(),
                "deform_conv2d: mask must have input's device and dtype");
    TORCH_CHECK(m.dim() == 4 && m.size(0) == g.batch && m.size(1) == g.deform_groups * k &&
                    m.size(2) == g.out_h && m.size(3) == g.out_w,
                "deform_conv2d: mask shape ", m.sizes(), " should be [", g.batch, ", ", g.deform_groups * k,
                ", ", g.out_h, ", ", g.out_w, "]");
  }
  return g;
}

// Elements allowed in one column buffer: `fallback`, or the environment variable
// DENSENETS_DEFORM_CONV_BUDGET (trades memory for speed; small values test chunking).
inline int64_t column_budget(int64_t fallback) {
  const char* env = std::getenv("DENSENETS_DEFORM_CONV_BUDGET");
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(env, &end, 10);
  TORCH_CHECK(*end == '\0' && value > 0, "DENSENETS_DEFORM_CONV_BUDGET must be a positive integer, got '", env,
              "'");
  return value;
}

// Columns per chunk so that a (C * K, L) buffer holds at most `budget` elements.
inline int64_t chunk_columns(const DeformGeometry& g, int64_t budget) {
  return std::max<int64_t>(1, std::min<int64_t>(g.columns(), budget / std::max<int64_t>(1, g.rows())));
}

// One bilinear sample, torchvision's convention: a point with y <= -1, y >= H, x <= -1
// or x >= W reads zero; otherwise the four neighbours, those outside the image reading
// zero. Corner addresses are clamped into the plane (their weight is then zero), so
// loads never need a branch:
//   value = w[0] * p[0] + w[1] * p[dx] + w[2] * p[dy] + w[3] * p[dy + dx],
// p = plane + offset. w[] is ordered (top-left, top-right, bottom-left, bottom-right).
template <typename T>
struct BilinearSample {
  int64_t offset;
  int32_t dx, dy;
  T w[4];
};

// Derivatives of the four weights w.r.t. y and x (zero for corners outside the image).
template <typename T>
struct BilinearGrad {
  T gy[4], gx[4];
};

template <typename T>
DN_HOST_DEVICE bool sample_inside(T y, T x, int64_t height, int64_t width) {
  // Written so that NaN coordinates count as outside.
  return y > T(-1) && y < T(height) && x > T(-1) && x < T(width);
}

template <typename T>
DN_HOST_DEVICE BilinearSample<T> bilinear_sample(T y, T x, int64_t height, int64_t width) {
  BilinearSample<T> s;
  s.offset = 0;
  s.dx = 0;
  s.dy = 0;
  s.w[0] = s.w[1] = s.w[2] = s.w[3] = T(0);
  if (!sample_inside(y, x, height, width)) return s;
  const T yf = std::floor(y), xf = std::floor(x);
  const int64_t y0 = static_cast<int64_t>(yf), x0 = static_cast<int64_t>(xf);
  const T ly = y - yf, lx = x - xf, hy = T(1) - ly, hx = T(1) - lx;
  const bool top = y0 >= 0, bottom = y0 + 1 < height, left = x0 >= 0, right = x0 + 1 < width;
  const int64_t row = top ? y0 : 0, col = left ? x0 : 0;
  s.offset = row * width + col;
  s.dy = (top && bottom) ? static_cast<int32_t>(width) : 0;
  s.dx = (left && right) ? 1 : 0;
  s.w[0] = (top && left) ? hy * hx : T(0);
  s.w[1] = (top && right) ? hy * lx : T(0);
  s.w[2] = (bottom && left) ? ly * hx : T(0);
  s.w[3] = (bottom && right) ? ly * lx : T(0);
  return s;
}

template <typename T>
DN_HOST_DEVICE BilinearGrad<T> bilinear_grad(T y, T x, int64_t height, int64_t width) {
  BilinearGrad<T> g;
  for (int i = 0; i < 4; ++i) g.gy[i] = g.gx[i] = T(0);
  if (!sample_inside(y, x, height, width)) return g;
  const T yf = std::floor(y), xf = std::floor(x);
  const int64_t y0 = static_cast<int64_t>(yf), x0 = static_cast<int64_t>(xf);
  const T ly = y - yf, lx = x - xf, hy = T(1) - ly, hx = T(1) - lx;
  const bool top = y0 >= 0, bottom = y0 + 1 < height, left = x0 >= 0, right = x0 + 1 < width;
  // value = hy*hx*v00 + hy*lx*v01 + ly*hx*v10 + ly*lx*v11, with d(ly)/dy = d(lx)/dx = 1.
  g.gy[0] = (top && left) ? -hx : T(0);
  g.gy[1] = (top && right) ? -lx : T(0);
  g.gy[2] = (bottom && left) ? hx : T(0);
  g.gy[3] = (bottom && right) ? lx : T(0);
  g.gx[0] = (top && left) ? -hy : T(0);
  g.gx[1] = (top && right) ? hy : T(0);
  g.gx[2] = (bottom && left) ? -ly : T(0);
  g.gx[3] = (bottom && right) ? ly : T(0);
  return g;
}

// Where kernel point (i, j) of output position (oy, ox) samples before its offset.
DN_HOST_DEVICE int64_t grid_y(const DeformGeometry& g, int64_t oy, int64_t i) {
  return oy * g.stride_h - g.pad_h + i * g.dilation_h;
}
DN_HOST_DEVICE int64_t grid_x(const DeformGeometry& g, int64_t ox, int64_t j) {
  return ox * g.stride_w - g.pad_w + j * g.dilation_w;
}

// Index of offset channel 2 * (d * K + k) (the y shift; x is + P) for column q = n * P + p.
DN_HOST_DEVICE int64_t offset_index(const DeformGeometry& g, int64_t n, int64_t p, int64_t d, int64_t k) {
  return ((n * g.deform_groups + d) * g.points() + k) * 2 * g.positions() + p;
}
// Index of mask channel d * K + k for column q = n * P + p.
DN_HOST_DEVICE int64_t mask_index(const DeformGeometry& g, int64_t n, int64_t p, int64_t d, int64_t k) {
  return ((n * g.deform_groups + d) * g.points() + k) * g.positions() + p;
}

// CPU forward reading the input channels-last (cpu/deform_conv2d_nhwc_cpu.cpp), and
// whether it suits g: blends of at least 8 channels, or DENSENETS_DEFORM_CONV_LAYOUT
// set to "nhwc" (always) or "nchw" (never).
bool nhwc_forward_suits(const DeformGeometry& g);
// Whether the CPU forward returns a channels-last output: for a channels-last input (one
// that is channels-last contiguous and not also NCHW contiguous), as F.conv2d does.
bool channels_last_output(const at::Tensor& input);
at::Tensor deform_conv2d_forward_nhwc_cpu(const DeformGeometry& g, const at::Tensor& input, const at::Tensor& offset,
                                          const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                                          const std::optional<at::Tensor>& bias);

}  // namespace densenets
