"""Custom operators: deformable convolution (DCNv1, modulated DCNv2)."""
