// Multi-scale deformable attention (Deformable DETR): sizes, argument checks and the
// per-sample math shared by the CPU and CUDA kernels (host/device inline templates).
//
// Notation: N images, S = sum(h_l * w_l) flattened pixels, M heads, C channels per head,
// Q queries, L levels, P points. value[N, S, M, C]; sampling_locations[N, Q, M, L, P, 2]
// as (x, y) in [0, 1] per level; attention_weights[N, Q, M, L, P]; output[N, Q, M * C].
// Location x of a level of width w reads pixel column x * w - 0.5 (grid_sample with
// align_corners=False); the bilinear weights and zero padding are those of
// deform_conv2d.h's bilinear_sample (torchvision's convention, the same as grid_sample's
// "zeros" padding).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "deform_conv2d.h"

namespace densenets {

// Sizes of one call; 64-bit so that products index large tensors.
struct MsdaGeometry {
  int64_t batch, pixels, heads, channels, queries, levels, points;

  DN_HOST_DEVICE int64_t samples() const { return levels * points; }         // L * P per (n, q, m)
  DN_HOST_DEVICE int64_t pixel_stride() const { return heads * channels; }   // M * C
  DN_HOST_DEVICE int64_t rows() const { return batch * queries * heads; }    // N * Q * M
};

// Checks what the Python wrapper checks, for direct callers of torch.ops.densenets (the
// level sizes themselves are data; the CPU kernel checks them, see level_table).
inline MsdaGeometry make_msda_geometry(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& loc,
                                       const at::Tensor& attn) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, heads, C), got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be int64");
  MsdaGeometry g;
  g.batch = value.size(0);
  g.pixels = value.size(1);
  g.heads = value.size(2);
  g.channels = value.size(3);
  g.levels = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == g.levels,
              "ms_deform_attn: level_start_index must be (", g.levels, ",), got ", level_start_index.sizes());
  TORCH_CHECK(loc.dim() == 6 && loc.size(0) == g.batch && loc.size(2) == g.heads && loc.size(3) == g.levels &&
                  loc.size(5) == 2,
              "ms_deform_attn: sampling_locations shape ", loc.sizes(), " should be (", g.batch, ", Q, ", g.heads,
              ", ", g.levels, ", P, 2)");
  g.queries = loc.size(1);
  g.points = loc.size(4);
  TORCH_CHECK(attn.dim() == 5 && attn.sizes() == loc.sizes().slice(0, 5), "ms_deform_attn: attention_weights shape ",
              attn.sizes(), " should be ", loc.sizes().slice(0, 5));
  TORCH_CHECK(loc.scalar_type() == value.scalar_type() && attn.scalar_type() == value.scalar_type(),
              "ms_deform_attn: value, sampling_locations and attention_weights must have one dtype, got ",
              value.scalar_type(), ", ", loc.scalar_type(), ", ", attn.scalar_type());
  TORCH_CHECK(loc.device() == value.device() && attn.device() == value.device() &&
                  spatial_shapes.device() == value.device() && level_start_index.device() == value.device(),
              "ms_deform_attn: all tensors must be on value's device ", value.device());
  return g;
}

// The bilinear sample of location (x, y) in [0, 1] on a height x width level.
template <typename A>
DN_HOST_DEVICE BilinearSample<A> msda_sample(A x, A y, int64_t height, int64_t width) {
  return bilinear_sample<A>(y * A(height) - A(0.5), x * A(width) - A(0.5), height, width);
}

// d(sample) / d(location): the pixel derivatives scaled by the level size.
template <typename A>
DN_HOST_DEVICE BilinearGrad<A> msda_sample_grad(A x, A y, int64_t height, int64_t width) {
  BilinearGrad<A> g = bilinear_grad<A>(y * A(height) - A(0.5), x * A(width) - A(0.5), height, width);
  for (int i = 0; i < 4; ++i) {
    g.gy[i] *= A(height);
    g.gx[i] *= A(width);
  }
  return g;
}

template <typename A>
DN_HOST_DEVICE bool sample_empty(const BilinearSample<A>& s) {
  return s.w[0] == A(0) && s.w[1] == A(0) && s.w[2] == A(0) && s.w[3] == A(0);
}

}  // namespace densenets
