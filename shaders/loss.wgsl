// Losses with their gradients. Each kernel writes the gradient and a per-row (or per-element)
// loss into a scratch buffer in one pass over many workgroups; `mean` in reduce.wgsl then
// reduces the scratch buffer to out[0] (deterministic, no float atomics).
//
// softmax_xent_rows: one invocation per row of logits (rows, cols), labels (rows, u32) ->
//     grad (rows, cols) = (softmax(logits) - target) / rows,
//     row_loss[row] = logsumexp(row) - (1 - e) row[label] - e mean(row),
//   target = (1 - e) onehot(label) + e / cols, e the label smoothing (dims.smoothing_bits).
//   An out-of-range label makes that row's loss NaN, so it cannot pass silently.
//   bindings: 0 dims, 1 logits, 2 labels, 3 grad (write), 4 row_loss (write)
// pointwise (LOSS override): one invocation per element of prediction p and target t ->
//     grad = dL/dp / n, elem_loss = L(p, t)
//   LOSS 0: mean squared error          (p - t)^2
//   LOSS 1: binary cross-entropy        -(t log p + (1 - t) log(1 - p)), p clamped to [eps, 1 - eps]
//   LOSS 2: binary cross-entropy on logits x: max(x, 0) - x t + log(1 + exp(-|x|))
//   LOSS 3: mean absolute error         |p - t|
//   LOSS 4: Huber (delta 1)             (p - t)^2 / 2 within delta, delta (|p - t| - delta / 2) beyond
//   bindings: 0 dims, 1 prediction, 2 target, 3 grad (write), 4 elem_loss (write)

struct Dims {
    rows: u32,
    cols: u32,
    smoothing_bits: u32,   // softmax_xent_rows: label smoothing as f32 bits
    _pad1: u32,
}

const WG: u32 = 64u;
const BCE_EPS: f32 = 1e-7;
// Keras' and PyTorch's default delta.
const HUBER_DELTA: f32 = 1.0;
override LOSS: u32 = 0u;

@group(0) @binding(0) var<storage, read> dims: Dims;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + nwg.x * (wid.y + nwg.y * wid.z)) * WG + lid;
}

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;

@compute @workgroup_size(WG)
fn softmax_xent_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_index(wid, nwg, lid);
    if (row >= dims.rows) {
        return;
    }
    let inv_rows = 1.0 / f32(dims.rows);
    let base = row * dims.cols;
    var m = logits[base];
    for (var j = 1u; j < dims.cols; j++) {
        let v = logits[base + j];
        if (v > m) {
            m = v;
        }
    }
    var s = 0.0;
    for (var j = 0u; j < dims.cols; j++) {
        s = s + exp(logits[base + j] - m);
    }
    let label = labels[row];
    let inv_s = 1.0 / s;
    let e = bitcast<f32>(dims.smoothing_bits);
    let hit = 1.0 - e;
    let rest = e / f32(dims.cols);
    var sum = 0.0;
    for (var j = 0u; j < dims.cols; j++) {
        let z = logits[base + j];
        let p = exp(z - m) * inv_s;
        grad[base + j] = (p - select(rest, hit + rest, j == label)) * inv_rows;
        sum += z;
    }
    var row_loss = log(s) + m - logits[base + min(label, dims.cols - 1u)];
    if (e != 0.0) {
        row_loss = log(s) + m - hit * logits[base + min(label, dims.cols - 1u)] - e * (sum / f32(dims.cols));
    }
    if (label >= dims.cols) {
        row_loss = bitcast<f32>(0x7fc00000u);
    }
    loss[row] = row_loss;
}

@group(0) @binding(1) var<storage, read> prediction: array<f32>;
@group(0) @binding(2) var<storage, read> target_: array<f32>;

@compute @workgroup_size(WG)
fn pointwise(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    let n = dims.rows;
    if (i >= n) {
        return;
    }
    let p = prediction[i];
    let t = target_[i];
    var l = 0.0;
    var g = 0.0;
    switch LOSS {
        case 0u: {
            let d = p - t;
            l = d * d;
            g = 2.0 * d;
        }
        case 1u: {
            let q = clamp(p, BCE_EPS, 1.0 - BCE_EPS);
            l = -(t * log(q) + (1.0 - t) * log(1.0 - q));
            g = (q - t) / (q * (1.0 - q));
        }
        case 3u: {
            // Mean absolute error; the subgradient at 0 is 0 (as TensorFlow's sign).
            let d = p - t;
            l = abs(d);
            g = sign(d);
        }
        case 4u: {
            // Huber with delta HUBER_DELTA: quadratic inside, linear outside.
            let d = p - t;
            let a = abs(d);
            if (a <= HUBER_DELTA) {
                l = 0.5 * d * d;
                g = d;
            } else {
                l = HUBER_DELTA * (a - 0.5 * HUBER_DELTA);
                g = HUBER_DELTA * sign(d);
            }
        }
        default: {
            l = max(p, 0.0) - p * t + log(1.0 + exp(-abs(p)));
            var sig = 0.0;
            if (p >= 0.0) {
                sig = 1.0 / (1.0 + exp(-p));
            } else {
                let e = exp(p);
                sig = e / (1.0 + e);
            }
            g = sig - t;
        }
    }
    grad[i] = g / f32(n);
    loss[i] = l;
}

// metrics: accumulates a step's loss and correct predictions on the GPU, so the host reads
// them once per epoch. One workgroup; deterministic (fixed tree, no atomics). The totals are
// u32 words (src/ops/metrics.rs, MetricTotals::from_words, reads them):
//   acc[0..2]  Kahan sum of loss[0] * rows (the loss weighted by the batch's samples), as f32 bits
//   acc[2..4]  correct predictions, acc[4..6] predictions, acc[6..8] samples: u64 as (lo, hi)
//   acc[8]     steps
//   acc[9]     the 1-based step of the first non-finite loss (0 while every loss was finite), so
//              the host can name the step without reading per step.
//   f32 targets only (zero for labels), each a Kahan sum over every element of the step:
//   acc[10..12] |output - target|, acc[12..14] (output - target)^2, acc[14..16] target,
//   acc[16..18] target^2; acc[18..20] elements, a u64. The host turns them into MAE, RMSE
//   and R^2.
// metrics (sparse labels): a row is correct when its first maximal logit is at its label.
// metrics_dense (f32 targets, METRIC override):
//   METRIC 0: a row is correct when its first maximal output is at its target's first maximum;
//   METRIC 1 (binary accuracy): each element is a prediction, correct when
//             (output > THRESHOLD) == (target > 0.5).
// bindings: 0 dims (rows, cols), 1 outputs, 2 labels or targets, 3 loss (1, read),
//           4 acc (10 u32, read-write)
override METRIC: u32 = 0u;
override THRESHOLD: f32 = 0.5;

@group(0) @binding(1) var<storage, read> m_logits: array<f32>;
@group(0) @binding(2) var<storage, read> m_labels: array<u32>;
@group(0) @binding(3) var<storage, read> m_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> m_acc: array<u32>;

var<workgroup> correct_part: array<u32, WG>;
var<workgroup> sums_part: array<vec4<f32>, WG>;

fn first_max(base: u32) -> u32 {
    var best = 0u;
    var best_v = m_logits[base];
    for (var j = 1u; j < dims.cols; j++) {
        let v = m_logits[base + j];
        if (v > best_v) {
            best_v = v;
            best = j;
        }
    }
    return best;
}

// acc[i..i+2] += x as a u64 in (lo, hi) words.
fn add_u64(i: u32, x: u32) {
    let lo = m_acc[i] + x;
    m_acc[i] = lo;
    m_acc[i + 1u] = m_acc[i + 1u] + select(0u, 1u, lo < x);
}

// acc[i..i+2] += x as a Kahan (sum, compensation) pair of f32 bits.
fn add_kahan(i: u32, x: f32) {
    let sum = bitcast<f32>(m_acc[i]);
    let y = x - bitcast<f32>(m_acc[i + 1u]);
    let t = sum + y;
    m_acc[i + 1u] = bitcast<u32>((t - sum) - y);
    m_acc[i] = bitcast<u32>(t);
}

// Sums `correct` and the error sums (|d|, d^2, t, t^2) over the workgroup and accumulates the
// step into m_acc; `elements` is how many outputs the sums cover (0 for labels).
fn finish_metrics(lid: u32, correct: u32, predictions: u32, sums: vec4<f32>, elements: u32) {
    correct_part[lid] = correct;
    sums_part[lid] = sums;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            correct_part[lid] = correct_part[lid] + correct_part[lid + stride];
            sums_part[lid] = sums_part[lid] + sums_part[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let loss = m_loss[0];
        let finite = (bitcast<u32>(loss) & 0x7f800000u) != 0x7f800000u;
        if (!finite && m_acc[9] == 0u) {
            m_acc[9] = m_acc[8] + 1u;
        }
        // Kahan: the compensation keeps the sum exact to f32 rounding over many steps.
        add_kahan(0u, loss * f32(dims.rows));
        add_u64(2u, correct_part[0]);
        add_u64(4u, predictions);
        add_u64(6u, dims.rows);
        m_acc[8] = m_acc[8] + 1u;
        if (elements > 0u) {
            let s = sums_part[0];
            add_kahan(10u, s.x);
            add_kahan(12u, s.y);
            add_kahan(14u, s.z);
            add_kahan(16u, s.w);
            add_u64(18u, elements);
        }
    }
}

@compute @workgroup_size(WG)
fn metrics(@builtin(local_invocation_index) lid: u32) {
    var correct = 0u;
    for (var row = lid; row < dims.rows; row += WG) {
        correct += select(0u, 1u, first_max(row * dims.cols) == m_labels[row]);
    }
    finish_metrics(lid, correct, dims.rows, vec4<f32>(0.0), 0u);
}

@group(0) @binding(2) var<storage, read> m_targets: array<f32>;

@compute @workgroup_size(WG)
fn metrics_dense(@builtin(local_invocation_index) lid: u32) {
    let n = dims.rows * dims.cols;
    var sums = vec4<f32>(0.0);
    for (var i = lid; i < n; i += WG) {
        let t = m_targets[i];
        let d = m_logits[i] - t;
        sums += vec4<f32>(abs(d), d * d, t, t * t);
    }
    var correct = 0u;
    if (METRIC == 0u) {
        for (var row = lid; row < dims.rows; row += WG) {
            let base = row * dims.cols;
            var best = 0u;
            var best_v = m_targets[base];
            for (var j = 1u; j < dims.cols; j++) {
                let v = m_targets[base + j];
                if (v > best_v) {
                    best_v = v;
                    best = j;
                }
            }
            correct += select(0u, 1u, first_max(base) == best);
        }
        finish_metrics(lid, correct, dims.rows, sums, n);
    } else {
        for (var i = lid; i < n; i += WG) {
            correct += select(0u, 1u, (m_logits[i] > THRESHOLD) == (m_targets[i] > 0.5));
        }
        finish_metrics(lid, correct, n, sums, n);
    }
}
