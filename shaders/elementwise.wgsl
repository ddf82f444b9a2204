// Elementwise kernels over flat f32 arrays: activations, their gradients, and bias-add.
//
// dims: n elements; for bias_add the array is row-major (n / cols, cols).
// Activation gradients are written in terms of the forward OUTPUT y where they can (ReLU:
// y > 0 exactly when x > 0), so the pre-activation need not stay alive; the others read the
// input x (Activation::backward_reads_input in src/ops/vocab.rs says which).
//   activation_forward   bindings: 0 dims, 1 x (read), 2 y (write)
//   activation_backward  bindings: 0 dims, 1 saved (y or x, read), 2 dy (read), 3 dx (write)
//   bias_add             bindings: 0 dims, 1 bias (cols, read), 2 y (in place)

struct Dims {
    n: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;
// 0: ReLU, 1: sigmoid, 2: tanh, 3: identity, 4: GELU (tanh form), 5: SiLU, 6: leaky ReLU
// (slope 0.01), 7: ELU (alpha 1), 8: softplus
override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> dims: Dims;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
}

// ReLU keeps NaN (NaN < 0 is false) and maps -inf to 0.
fn relu(x: f32) -> f32 {
    return select(x, 0.0, x < 0.0);
}

// Two-sided form: exp never overflows, so +-inf give exactly 1 and 0.
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// NaN test on the bits: compilers may fold `x != x` to false.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Builtin tanh may overflow to NaN for large |x| on some drivers; tanh(+-9) is already +-1
// in f32, so clamping changes nothing else. NaN is passed through explicitly.
fn tanh_safe(x: f32) -> f32 {
    if (is_nan(x)) {
        return x;
    }
    return tanh(clamp(x, -9.0, 9.0));
}

// GELU's tanh form as x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3); ReLU for |x| >= 10,
// where the two agree in f32 and x^3 would overflow further out (src/cpu/activation.rs).
const GELU_K0: f32 = 0.7978845608028654;
const GELU_K1: f32 = 0.044715;

fn gelu_u(x: f32) -> f32 {
    return GELU_K0 * (x + GELU_K1 * x * x * x);
}

fn gelu(x: f32) -> f32 {
    if (abs(x) >= 10.0) {
        return relu(x);
    }
    return x * sigmoid(2.0 * gelu_u(x));
}

fn gelu_grad(x: f32, dy: f32) -> f32 {
    if (abs(x) >= 10.0) {
        return select(0.0, dy, x > 0.0);
    }
    let s = sigmoid(2.0 * gelu_u(x));
    let du = GELU_K0 * (1.0 + 3.0 * GELU_K1 * x * x);
    return dy * (s + x * s * (1.0 - s) * 2.0 * du);
}

// Leaky ReLU's slope below zero (src/ops/vocab.rs, LEAKY_RELU_SLOPE).
const LEAKY_SLOPE: f32 = 0.01;

// ln(1 + exp(x)) without overflow: max(x, 0) + ln(1 + exp(-|x|)).
fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

fn activate(x: f32) -> f32 {
    switch OP {
        case 0u: { return relu(x); }
        case 1u: { return sigmoid(x); }
        case 2u: { return tanh_safe(x); }
        case 4u: { return gelu(x); }
        case 5u: { return x * sigmoid(x); }
        case 6u: { return select(x, x * LEAKY_SLOPE, x < 0.0); }
        case 7u: { return select(exp(x) - 1.0, x, x > 0.0); }
        case 8u: {
            if (is_nan(x)) {
                return x;
            }
            return softplus(x);
        }
        default: { return x; }
    }
}

// dL/dx from dL/dy and the saved value: y = f(x), or x for activations whose rule reads it.
// ReLU'(0) is 0 (the subgradient PyTorch and Keras use).
fn activate_grad(saved: f32, dy: f32) -> f32 {
    let y = saved;
    switch OP {
        case 0u: { return select(0.0, dy, y > 0.0); }
        case 1u: { return dy * y * (1.0 - y); }
        case 2u: { return dy * (1.0 - y * y); }
        case 4u: { return gelu_grad(saved, dy); }
        case 5u: {
            let s = sigmoid(saved);
            return dy * (s + saved * s * (1.0 - s));
        }
        case 6u: { return select(dy * LEAKY_SLOPE, dy, y > 0.0); }
        case 7u: { return select(dy * (y + 1.0), dy, y > 0.0); }
        case 8u: { return dy * sigmoid(saved); }
        default: { return dy; }
    }
}

@group(0) @binding(1) var<storage, read> x_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> y_out: array<f32>;

@compute @workgroup_size(WG)
fn activation_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i < dims.n) {
        y_out[i] = activate(x_in[i]);
    }
}

@group(0) @binding(1) var<storage, read> y_in: array<f32>;
@group(0) @binding(2) var<storage, read> dy_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx_out: array<f32>;

@compute @workgroup_size(WG)
fn activation_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i < dims.n) {
        dx_out[i] = activate_grad(y_in[i], dy_in[i]);
    }
}

@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> y_inout: array<f32>;

@compute @workgroup_size(WG)
fn bias_add(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i < dims.n) {
        y_inout[i] = y_inout[i] + bias[i % dims.cols];
    }
}

// bias_add_out: y = x + bias (out of place). bindings: 0 dims, 1 x, 2 bias (cols), 3 y
@group(0) @binding(1) var<storage, read> bx: array<f32>;
@group(0) @binding(2) var<storage, read> bb: array<f32>;
@group(0) @binding(3) var<storage, read_write> by: array<f32>;

@compute @workgroup_size(WG)
fn bias_add_out(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i < dims.n) {
        by[i] = bx[i] + bb[i % dims.cols];
    }
}

// add: y = a + b elementwise (gradient accumulation). bindings: 0 dims, 1 a, 2 b, 3 y
@compute @workgroup_size(WG)
fn add(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i < dims.n) {
        by[i] = bx[i] + bb[i];
    }
}

// mul: y = a * b elementwise (the Multiply merge and its gradients). bindings: 0 dims, 1 a,
// 2 b, 3 y
@compute @workgroup_size(WG)
fn mul(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i < dims.n) {
        by[i] = bx[i] * bb[i];
    }
}

// dropout: inverted dropout with a counter-based mask (src/cpu/dropout.rs computes the same):
//   key = h(seed_lo ^ h(seed_hi ^ h(step_lo ^ h(step_hi)))), h = lowbias32,
//   y[i] = x[i] * (h(key ^ h(i)) >= threshold ? scale : 0) while training, x[i] otherwise.
// Applied to dy it is the backward pass. The step and the training flag come from the
// executor's StepMode block (src/gpu/kernels/elementwise.rs), written per submission, so the
// prebuilt launches never change.
// bindings: 0 drop (params), 1 drop_state (StepMode, read), 2 x (read), 3 y (write)
struct DropoutParams {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    threshold: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct StepMode {
    step_lo: u32,
    step_hi: u32,
    training: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> drop: DropoutParams;
@group(0) @binding(1) var<storage, read> drop_state: StepMode;
@group(0) @binding(2) var<storage, read> drop_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> drop_y: array<f32>;

fn lowbias32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

@compute @workgroup_size(WG)
fn dropout(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= drop.n) {
        return;
    }
    let x = drop_x[i];
    if (drop_state.training == 0u) {
        drop_y[i] = x;
        return;
    }
    let key = lowbias32(drop.seed_lo ^ lowbias32(drop.seed_hi
        ^ lowbias32(drop_state.step_lo ^ lowbias32(drop_state.step_hi))));
    let keep = lowbias32(key ^ lowbias32(i)) >= drop.threshold;
    drop_y[i] = x * select(0.0, drop.scale, keep);
}
