// Operator schemas of densenets._C. The kernels register per device in cpu/ and cuda/;
// autograd and the fake (shape-only) implementations are registered from Python
// (densenets/ops/deform_conv.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import densenets._C` loads this library, which registers the ops below.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(densenets, m) {
  // out[N, C_out, H_out, W_out]; mask given = modulated (DCNv2). Groups and deformable
  // groups are read from the shapes of weight and offset.
  m.def(
      "deform_conv2d(Tensor input, Tensor offset, Tensor weight, Tensor? mask, Tensor? bias, "
      "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w) -> Tensor");
  // Returns (grad_input, grad_offset, grad_weight, grad_mask, grad_bias); grad_mask is
  // empty when mask is None.
  m.def(
      "deform_conv2d_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor weight, "
      "Tensor? mask, int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
