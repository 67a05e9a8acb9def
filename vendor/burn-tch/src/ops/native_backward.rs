//! cellspace patch: libtorch's native backward kernels for convolution and batch norm
//! (`src/native/backward.cpp`), which burn's defaults replace with compositions of forward ops.

use std::ffi::{CStr, c_char, c_int};
use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn burn_tch_convolution_backward(
        grad_output: *const C_tensor,
        input: *const C_tensor,
        weight: *const C_tensor,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        dims: i64,
        groups: i64,
        want_input: c_int,
        want_weight: c_int,
        grad_input: *mut *mut C_tensor,
        grad_weight: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn burn_tch_batch_norm_backward(
        grad_output: *const C_tensor,
        input: *const C_tensor,
        weight: *const C_tensor,
        save_mean: *const C_tensor,
        save_invstd: *const C_tensor,
        eps: f64,
        grad_input: *mut *mut C_tensor,
        grad_weight: *mut *mut C_tensor,
        grad_bias: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn burn_tch_channels_last(input: *const C_tensor, output: *mut *mut C_tensor) -> *mut c_char;
    fn burn_tch_free_error(message: *mut c_char);
}

fn check(err: *mut c_char, what: &str) {
    if !err.is_null() {
        // SAFETY: a NUL-terminated copy made by the shim, freed once here.
        let message = unsafe { CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned();
        unsafe { burn_tch_free_error(err) };
        panic!("libtorch {what} failed: {message}");
    }
}

/// Which gradients of a convolution to compute.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConvGrad {
    Input,
    Weight,
}

/// The gradient of a symmetric-padding convolution with respect to its input or weight.
pub(crate) fn convolution_backward<const N: usize>(
    grad_output: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    stride: [usize; N],
    padding: [usize; N],
    dilation: [usize; N],
    groups: usize,
    which: ConvGrad,
) -> Tensor {
    let as_i64 = |a: [usize; N]| a.map(|v| v as i64);
    let (stride, padding, dilation) = (as_i64(stride), as_i64(padding), as_i64(dilation));
    let mut gi: *mut C_tensor = std::ptr::null_mut();
    let mut gw: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: the tensors outlive the call; arrays hold N values; outputs are fresh tensors.
    let err = unsafe {
        burn_tch_convolution_backward(
            grad_output.as_ptr(),
            input.as_ptr(),
            weight.as_ptr(),
            stride.as_ptr(),
            padding.as_ptr(),
            dilation.as_ptr(),
            N as i64,
            groups as i64,
            (which == ConvGrad::Input) as c_int,
            (which == ConvGrad::Weight) as c_int,
            &mut gi,
            &mut gw,
        )
    };
    check(err, "convolution backward");
    let out = if which == ConvGrad::Input { gi } else { gw };
    // SAFETY: a tensor allocated by the shim, owned from here on.
    unsafe { Tensor::from_ptr(out) }
}

/// Input, weight and bias gradients of training-mode batch norm.
pub(crate) fn batch_norm_backward(
    grad_output: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    save_mean: &Tensor,
    save_invstd: &Tensor,
    eps: f64,
) -> (Tensor, Tensor, Tensor) {
    let mut g: [*mut C_tensor; 3] = [std::ptr::null_mut(); 3];
    let [gi, gw, gb] = &mut g;
    // SAFETY: as above.
    let err = unsafe {
        burn_tch_batch_norm_backward(
            grad_output.as_ptr(),
            input.as_ptr(),
            weight.as_ptr(),
            save_mean.as_ptr(),
            save_invstd.as_ptr(),
            eps,
            gi,
            gw,
            gb,
        )
    };
    check(err, "batch norm backward");
    // SAFETY: three tensors allocated by the shim.
    unsafe {
        (
            Tensor::from_ptr(g[0]),
            Tensor::from_ptr(g[1]),
            Tensor::from_ptr(g[2]),
        )
    }
}

/// A 4-D CPU tensor in channels-last (NHWC) memory order, which oneDNN's convolutions run
/// ~1.25x faster than NCHW on AVX-512 CPUs; libtorch keeps the order through convolution,
/// batch norm, relu and their backward passes, so converting a network's input once carries
/// it through. Other tensors are returned as they are (a shallow copy).
pub(crate) fn channels_last(input: &Tensor) -> Tensor {
    if input.dim() != 4 || input.device() != tch::Device::Cpu {
        return input.shallow_clone();
    }
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: as above.
    let err = unsafe { burn_tch_channels_last(input.as_ptr(), &mut out) };
    check(err, "channels-last conversion");
    // SAFETY: a tensor allocated by the shim.
    unsafe { Tensor::from_ptr(out) }
}
