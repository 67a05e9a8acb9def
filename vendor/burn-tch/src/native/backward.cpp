// cellspace patch: libtorch's own backward kernels for convolution and batch norm, which tch
// 0.22 does not wrap (their `bool[3]` output mask is outside its generator). Without them burn
// differentiates a convolution's weight as another convolution over swapped batch and channel
// axes, which oneDNN runs ~3x slower than its backward-weights kernel.
#include <ATen/ATen.h>
#include <cstring>
#include <vector>

extern "C" {

static char *error_copy(const char *what) { return strdup(what); }

// Gradients of a (non-transposed) convolution. Returns NULL on success, else an error message
// to be freed with burn_tch_free_error. Unrequested outputs are left untouched.
char *burn_tch_convolution_backward(at::Tensor *grad_output, at::Tensor *input, at::Tensor *weight,
                                    const int64_t *stride, const int64_t *padding,
                                    const int64_t *dilation, int64_t dims, int64_t groups,
                                    int want_input, int want_weight, at::Tensor **grad_input,
                                    at::Tensor **grad_weight) {
  try {
    std::vector<int64_t> output_padding(dims, 0);
    auto r = at::convolution_backward(
        *grad_output, *input, *weight, c10::nullopt, at::IntArrayRef(stride, dims),
        at::IntArrayRef(padding, dims), at::IntArrayRef(dilation, dims), false, output_padding,
        groups, {want_input != 0, want_weight != 0, false});
    if (want_input) *grad_input = new at::Tensor(std::get<0>(r));
    if (want_weight) *grad_weight = new at::Tensor(std::get<1>(r));
    return nullptr;
  } catch (const std::exception &e) {
    return error_copy(e.what());
  }
}

// Gradients of training-mode batch norm given the saved batch mean and inverse std.
char *burn_tch_batch_norm_backward(at::Tensor *grad_output, at::Tensor *input, at::Tensor *weight,
                                   at::Tensor *save_mean, at::Tensor *save_invstd, double eps,
                                   at::Tensor **grad_input, at::Tensor **grad_weight,
                                   at::Tensor **grad_bias) {
  try {
    auto r = at::native_batch_norm_backward(*grad_output, *input, *weight, c10::nullopt,
                                            c10::nullopt, *save_mean, *save_invstd, true, eps,
                                            {true, true, true});
    *grad_input = new at::Tensor(std::get<0>(r));
    *grad_weight = new at::Tensor(std::get<1>(r));
    *grad_bias = new at::Tensor(std::get<2>(r));
    return nullptr;
  } catch (const std::exception &e) {
    return error_copy(e.what());
  }
}

// The same values in channels-last (NHWC) memory order; the tensor itself when already so.
char *burn_tch_channels_last(at::Tensor *input, at::Tensor **output) {
  try {
    *output = new at::Tensor(input->contiguous(at::MemoryFormat::ChannelsLast));
    return nullptr;
  } catch (const std::exception &e) {
    return error_copy(e.what());
  }
}

void burn_tch_free_error(char *message) { free(message); }
}
