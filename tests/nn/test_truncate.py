"""truncate_kernel: the values of its report and its kernels, dense and through a layer's bonds."""
