// Optimizer updates over flat f32 buffers, one invocation per parameter, in place.
//
// sgd (PyTorch semantics):  g = grad + wd * p;  v = momentum * v + g;
//                           step = nesterov ? g + momentum * v : v  (plain g without momentum)
//                           p = p - lr * step
//   bindings: 0 params, 1 p (rw), 2 grad, 3 velocity (rw)
// adam / adamw:  g = grad (+ wd * p for Adam's L2 form); m = b1 m + (1 - b1) g;
//                v = b2 v + (1 - b2) g^2;  p = p - lr * (m / bc1) / (sqrt(v / bc2) + eps)
//                AdamW instead decays first: p = p * (1 - lr * wd).
//   bc1 = 1 - b1^t, bc2 = 1 - b2^t are computed on the host for step t (in f64).
//   bindings: 0 params, 1 p (rw), 2 grad, 3 m (rw), 4 v (rw)
// amsgrad (Adam's AMSGrad form, PyTorch's amsgrad=True): as adam, then
//                v_max = max(v_max, v);  p = p - lr * (m / bc1) / (sqrt(v_max / bc2) + eps)
//   bindings: 0 params, 1 p (rw), 2 grad, 3 m (rw), 4 v (rw), 5 v_max (rw)
// lion (Chen et al. 2023):  c = b1 m + (1 - b1) g;  p = p (1 - lr wd) - lr sign(c);
//                           m = b2 m + (1 - b2) g
//   bindings: 0 params, 1 p (rw), 2 grad, 3 m (rw)

struct SgdParams {
    n: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct AdamParams {
    n: u32,
    decoupled: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct LionParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    weight_decay: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

// Adam's first half for one element (the scalar kernels) or one vec4 (the vec4 kernels): the
// weight decay (decoupled, or added to the gradient), then the two moments. adam and amsgrad
// differ only in the denominator they take from these.
struct Moments {
    p: f32,
    m: f32,
    v: f32,
}

fn adam_moments(q: AdamParams, p0: f32, g0: f32, m0: f32, v0: f32) -> Moments {
    var p = p0;
    var g = g0;
    if (q.decoupled != 0u) {
        p = p * (1.0 - q.lr * q.weight_decay);
    } else {
        g = g + q.weight_decay * p;
    }
    return Moments(p, q.beta1 * m0 + (1.0 - q.beta1) * g, q.beta2 * v0 + (1.0 - q.beta2) * g * g);
}

struct Moments4 {
    p: vec4<f32>,
    m: vec4<f32>,
    v: vec4<f32>,
}

fn adam_moments4(q: AdamParams, p0: vec4<f32>, g0: vec4<f32>, m0: vec4<f32>, v0: vec4<f32>) -> Moments4 {
    var p = p0;
    var g = g0;
    if (q.decoupled != 0u) {
        p = p * (1.0 - q.lr * q.weight_decay);
    } else {
        g = g + q.weight_decay * p;
    }
    return Moments4(p, q.beta1 * m0 + (1.0 - q.beta1) * g, q.beta2 * v0 + (1.0 - q.beta2) * g * g);
}

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
}

@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> moment1: array<f32>;

@group(0) @binding(0) var<storage, read> sgd_p: SgdParams;

@compute @workgroup_size(WG)
fn sgd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= sgd_p.n) {
        return;
    }
    let p = param[i];
    var g = grad[i] + sgd_p.weight_decay * p;
    if (sgd_p.momentum != 0.0) {
        let v = sgd_p.momentum * moment1[i] + g;
        moment1[i] = v;
        if (sgd_p.nesterov != 0u) {
            g = g + sgd_p.momentum * v;
        } else {
            g = v;
        }
    }
    param[i] = p - sgd_p.lr * g;
}

@group(0) @binding(0) var<storage, read> adam_p: AdamParams;
@group(0) @binding(4) var<storage, read_write> moment2: array<f32>;

@compute @workgroup_size(WG)
fn adam(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= adam_p.n) {
        return;
    }
    let r = adam_moments(adam_p, param[i], grad[i], moment1[i], moment2[i]);
    moment1[i] = r.m;
    moment2[i] = r.v;
    param[i] = r.p - adam_p.lr * (r.m / adam_p.bc1) / (sqrt(r.v / adam_p.bc2) + adam_p.eps);
}

// sgd4 / adam4: the same updates on vec4s, for n divisible by 4 (the executors' arenas are).
// Each invocation updates 4 vec4s a grid apart (adjacent lanes stay on adjacent vec4s), so
// the parameter block is loaded once per 16 parameters: on lavapipe each of its loads is a
// per-lane loop too, and this made Adam over 670K parameters ~25% faster.
// lavapipe turns every storage access into per-lane scalar loads with bounds checks, so one
// 16-byte access instead of four cuts the update's time by about 3x there. Component-wise the
// arithmetic is the scalar kernels', so the results are identical.
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> moment1_4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> moment2_4: array<vec4<f32>>;

fn sgd_update(q: SgdParams, i: u32) {
    let p = param4[i];
    var g = grad4[i] + q.weight_decay * p;
    if (q.momentum != 0.0) {
        let v = q.momentum * moment1_4[i] + g;
        moment1_4[i] = v;
        if (q.nesterov != 0u) {
            g = g + q.momentum * v;
        } else {
            g = v;
        }
    }
    param4[i] = p - q.lr * g;
}

@compute @workgroup_size(WG)
fn sgd4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = sgd_p;
    let n4 = q.n / 4u;
    let i = linear_index(wid, nwg, lid);
    let stride = nwg.x * nwg.y * nwg.z * WG;
    if (i < n4) { sgd_update(q, i); }
    if (i + stride < n4) { sgd_update(q, i + stride); }
    if (i + 2u * stride < n4) { sgd_update(q, i + 2u * stride); }
    if (i + 3u * stride < n4) { sgd_update(q, i + 3u * stride); }
}

fn adam_update(q: AdamParams, i: u32) {
    let r = adam_moments4(q, param4[i], grad4[i], moment1_4[i], moment2_4[i]);
    moment1_4[i] = r.m;
    moment2_4[i] = r.v;
    param4[i] = r.p - q.lr * (r.m / q.bc1) / (sqrt(r.v / q.bc2) + q.eps);
}

@compute @workgroup_size(WG)
fn adam4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = adam_p;
    let n4 = q.n / 4u;
    let i = linear_index(wid, nwg, lid);
    let stride = nwg.x * nwg.y * nwg.z * WG;
    if (i < n4) { adam_update(q, i); }
    if (i + stride < n4) { adam_update(q, i + stride); }
    if (i + 2u * stride < n4) { adam_update(q, i + 2u * stride); }
    if (i + 3u * stride < n4) { adam_update(q, i + 3u * stride); }
}

// AMSGrad: Adam's moments, then the running maximum of v in the denominator.
@group(0) @binding(5) var<storage, read_write> moment3: array<f32>;

@compute @workgroup_size(WG)
fn amsgrad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= adam_p.n) {
        return;
    }
    let r = adam_moments(adam_p, param[i], grad[i], moment1[i], moment2[i]);
    let v_max = max(moment3[i], r.v);
    moment1[i] = r.m;
    moment2[i] = r.v;
    moment3[i] = v_max;
    param[i] = r.p - adam_p.lr * (r.m / adam_p.bc1) / (sqrt(v_max / adam_p.bc2) + adam_p.eps);
}

@group(0) @binding(5) var<storage, read_write> moment3_4: array<vec4<f32>>;

fn amsgrad_update(q: AdamParams, i: u32) {
    let r = adam_moments4(q, param4[i], grad4[i], moment1_4[i], moment2_4[i]);
    let v_max = max(moment3_4[i], r.v);
    moment1_4[i] = r.m;
    moment2_4[i] = r.v;
    moment3_4[i] = v_max;
    param4[i] = r.p - q.lr * (r.m / q.bc1) / (sqrt(v_max / q.bc2) + q.eps);
}

@compute @workgroup_size(WG)
fn amsgrad4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = adam_p;
    let n4 = q.n / 4u;
    let i = linear_index(wid, nwg, lid);
    let stride = nwg.x * nwg.y * nwg.z * WG;
    if (i < n4) { amsgrad_update(q, i); }
    if (i + stride < n4) { amsgrad_update(q, i + stride); }
    if (i + 2u * stride < n4) { amsgrad_update(q, i + 2u * stride); }
    if (i + 3u * stride < n4) { amsgrad_update(q, i + 3u * stride); }
}

// Lion: the sign of an interpolation of momentum and gradient, decoupled weight decay.
@group(0) @binding(0) var<storage, read> lion_p: LionParams;

@compute @workgroup_size(WG)
fn lion(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if (i >= lion_p.n) {
        return;
    }
    let g = grad[i];
    let m = moment1[i];
    let c = lion_p.beta1 * m + (1.0 - lion_p.beta1) * g;
    param[i] = param[i] * (1.0 - lion_p.lr * lion_p.weight_decay) - lion_p.lr * sign(c);
    moment1[i] = lion_p.beta2 * m + (1.0 - lion_p.beta2) * g;
}

fn lion_update(q: LionParams, i: u32) {
    let g = grad4[i];
    let m = moment1_4[i];
    let c = q.beta1 * m + (1.0 - q.beta1) * g;
    param4[i] = param4[i] * (1.0 - q.lr * q.weight_decay) - q.lr * sign(c);
    moment1_4[i] = q.beta2 * m + (1.0 - q.beta2) * g;
}

@compute @workgroup_size(WG)
fn lion4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = lion_p;
    let n4 = q.n / 4u;
    let i = linear_index(wid, nwg, lid);
    let stride = nwg.x * nwg.y * nwg.z * WG;
    if (i < n4) { lion_update(q, i); }
    if (i + stride < n4) { lion_update(q, i + stride); }
    if (i + 2u * stride < n4) { lion_update(q, i + 2u * stride); }
    if (i + 3u * stride < n4) { lion_update(q, i + 3u * stride); }
}
