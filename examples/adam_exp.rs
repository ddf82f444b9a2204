// Temporary experiment: Adam over buffers vs textures on lavapipe.
use std::time::Instant;

const N4: u32 = 168_000; // vec4s (672K params)
const W: u32 = 4096;

const SRC: &str = r#"
struct P { n4: u32, lr: f32, b1: f32, b2: f32, eps: f32, bc1: f32, bc2: f32, _p: u32 }
@group(0) @binding(0) var<uniform> pr: P;
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn buf(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4) { return; }
    let p = param4[i];
    let g = grad4[i];
    let m = pr.b1 * m4[i] + (1.0 - pr.b1) * g;
    let v = pr.b2 * v4[i] + (1.0 - pr.b2) * g * g;
    m4[i] = m;
    v4[i] = v;
    param4[i] = p - pr.lr * (m / pr.bc1) / (sqrt(v / pr.bc2) + pr.eps);
}

@compute @workgroup_size(256)
fn cheap(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4) { return; }
    let p = param4[i];
    let g = grad4[i];
    let m = pr.b1 * m4[i] + (1.0 - pr.b1) * g;
    let v = pr.b2 * v4[i] + (1.0 - pr.b2) * g * g;
    m4[i] = m;
    v4[i] = v;
    param4[i] = p - pr.lr * m / (sqrt(v) * pr.bc2 + pr.eps);
}

@compute @workgroup_size(256)
fn nomath(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4) { return; }
    let p = param4[i];
    let g = grad4[i];
    let m = m4[i] + g;
    let v = v4[i] + g;
    m4[i] = m;
    v4[i] = v;
    param4[i] = p + m + v;
}

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4) { return; }
    param4[i] = grad4[i];
}

@compute @workgroup_size(256)
fn nothing(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4 + 100000000u) { param4[i] = vec4(1.0); }
}

@compute @workgroup_size(256)
fn buf4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * 256u;
    for (var r = 0u; r < 4u; r++) {
        let i = gid.x + r * stride;
        if (i < pr.n4) {
            let p = param4[i];
            let g = grad4[i];
            let m = pr.b1 * m4[i] + (1.0 - pr.b1) * g;
            let v = pr.b2 * v4[i] + (1.0 - pr.b2) * g * g;
            m4[i] = m;
            v4[i] = v;
            param4[i] = p - pr.lr * (m / pr.bc1) / (sqrt(v / pr.bc2) + pr.eps);
        }
    }
}
"#;

const SRC_TEX: &str = r#"
struct P { n4: u32, lr: f32, b1: f32, b2: f32, eps: f32, bc1: f32, bc2: f32, _p: u32 }
@group(0) @binding(0) var<uniform> pr: P;
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var tm: texture_storage_2d<rgba32float, read_write>;
@group(0) @binding(4) var tv: texture_storage_2d<rgba32float, read_write>;

@compute @workgroup_size(256)
fn tex(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4) { return; }
    let xy = vec2<u32>(i % 4096u, i / 4096u);
    let p = param4[i];
    let g = grad4[i];
    let m = pr.b1 * textureLoad(tm, xy) + (1.0 - pr.b1) * g;
    let v = pr.b2 * textureLoad(tv, xy) + (1.0 - pr.b2) * g * g;
    textureStore(tm, xy, m);
    textureStore(tv, xy, v);
    param4[i] = p - pr.lr * (m / pr.bc1) / (sqrt(v / pr.bc2) + pr.eps);
}
"#;

const SRC_ALL: &str = r#"
struct P { n4: u32, lr: f32, b1: f32, b2: f32, eps: f32, bc1: f32, bc2: f32, _p: u32 }
@group(0) @binding(0) var<uniform> pr: P;
@group(0) @binding(1) var tp: texture_storage_2d<rgba32float, read_write>;
@group(0) @binding(2) var tg: texture_storage_2d<rgba32float, read_write>;
@group(0) @binding(3) var tm: texture_storage_2d<rgba32float, read_write>;
@group(0) @binding(4) var tv: texture_storage_2d<rgba32float, read_write>;

@compute @workgroup_size(256)
fn all(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4) { return; }
    let xy = vec2<u32>(i % 4096u, i / 4096u);
    let p = textureLoad(tp, xy);
    let g = textureLoad(tg, xy);
    let m = pr.b1 * textureLoad(tm, xy) + (1.0 - pr.b1) * g;
    let v = pr.b2 * textureLoad(tv, xy) + (1.0 - pr.b2) * g * g;
    textureStore(tm, xy, m);
    textureStore(tv, xy, v);
    textureStore(tp, xy, p - pr.lr * (m / pr.bc1) / (sqrt(v / pr.bc2) + pr.eps));
}
"#;

const SRC_RO: &str = r#"
struct P { n4: u32, lr: f32, b1: f32, b2: f32, eps: f32, bc1: f32, bc2: f32, _p: u32 }
@group(0) @binding(0) var<uniform> pr: P;
@group(0) @binding(1) var tp: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var tg: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var tm: texture_storage_2d<rgba32float, read>;
@group(0) @binding(4) var tv: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var op: texture_storage_2d<rgba32float, write>;
@group(0) @binding(6) var om: texture_storage_2d<rgba32float, write>;
@group(0) @binding(7) var ov: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(256)
fn ro(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4) { return; }
    let xy = vec2<u32>(i % 4096u, i / 4096u);
    let p = textureLoad(tp, xy);
    let g = textureLoad(tg, xy);
    let m = pr.b1 * textureLoad(tm, xy) + (1.0 - pr.b1) * g;
    let v = pr.b2 * textureLoad(tv, xy) + (1.0 - pr.b2) * g * g;
    textureStore(om, xy, m);
    textureStore(ov, xy, v);
    textureStore(op, xy, p - pr.lr * (m / pr.bc1) / (sqrt(v / pr.bc2) + pr.eps));
}

@compute @workgroup_size(256)
fn ro_sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= pr.n4) { return; }
    let xy = vec2<u32>(i % 4096u, i / 4096u);
    let p = textureLoad(tp, xy) + textureLoad(tg, xy) + textureLoad(tm, xy) + textureLoad(tv, xy);
    textureStore(op, xy, p);
}
"#;

fn main() {
    let instance = wgpu::Instance::default();
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .unwrap();
    let ff = adapter.get_texture_format_features(wgpu::TextureFormat::Rgba32Float);
    println!("{:?} rgba32float {:?}", adapter.get_info().name, ff.flags);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: wgpu::Features::TEXTURE_ADAPTER_SPECIFIC_FORMAT_FEATURES,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let n = (N4 * 16) as u64;
    let buf = |usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: n,
            usage,
            mapped_at_creation: false,
        })
    };
    let s = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
    let bufs: Vec<_> = (0..4).map(|_| buf(s)).collect();
    let h = N4.div_ceil(W);
    let tex = || {
        device
            .create_texture(&wgpu::TextureDescriptor {
                label: None,
                size: wgpu::Extent3d {
                    width: W,
                    height: h,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::STORAGE_BINDING,
                view_formats: &[],
            })
            .create_view(&Default::default())
    };
    let texs: Vec<_> = (0..7).map(|_| tex()).collect();
    let params: [f32; 8] = [f32::from_bits(N4), 1e-3, 0.9, 0.999, 1e-7, 0.1, 0.001, 0.0];
    let ub = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 32,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&ub, 0, bytemuck::cast_slice(&params));
    let run = |src: &str, entry: &str, tex_slots: &[usize]| {
        let used: Vec<u32> = match entry {
            "copy" => vec![0, 1, 2],
            "nothing" => vec![0, 1],
            "ro" => (0..8).collect(),
            "ro_sum" => (0..6).collect(),
            _ => vec![0, 1, 2, 3, 4],
        };
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipe = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let mut entries: Vec<wgpu::BindGroupEntry> = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: ub.as_entire_binding(),
        }];
        for b in 1..8u32 {
            if !used.contains(&b) {
                continue;
            }
            let r = if tex_slots.contains(&(b as usize)) {
                wgpu::BindingResource::TextureView(&texs[b as usize - 1])
            } else {
                bufs[b as usize - 1].as_entire_binding()
            };
            entries.push(wgpu::BindGroupEntry {
                binding: b,
                resource: r,
            });
        }
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &entries,
        });
        (pipe, bg)
    };
    let cases = [
        ("buf", run(SRC, "buf", &[])),
        ("copy", run(SRC, "copy", &[])),
        ("cheap", run(SRC, "cheap", &[])),
        ("nomath", run(SRC, "nomath", &[])),
        ("nothing", run(SRC, "nothing", &[])),
        ("buf4", run(SRC, "buf4", &[])),
        ("tex", run(SRC_TEX, "tex", &[3, 4])),
        ("all", run(SRC_ALL, "all", &[1, 2, 3, 4])),
        ("ro", run(SRC_RO, "ro", &[1, 2, 3, 4, 5, 6, 7])),
        ("ro_sum", run(SRC_RO, "ro_sum", &[1, 2, 3, 4, 5, 6, 7])),
    ];
    let mut times = vec![vec![]; cases.len()];
    for _ in 0..60 {
        for (k, (_, (pipe, bg))) in cases.iter().enumerate() {
            let t = Instant::now();
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipe);
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(
                    if k == 5 {
                        N4.div_ceil(1024)
                    } else {
                        N4.div_ceil(256)
                    },
                    1,
                    1,
                );
            }
            queue.submit([enc.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let nn = (N4 * 4) as usize;
    let (mut p, g, mut m, mut v) = (
        vec![0.1f32; nn],
        vec![0.01f32; nn],
        vec![0f32; nn],
        vec![0f32; nn],
    );
    let mut ct = vec![];
    for _ in 0..30 {
        let t = Instant::now();
        for i in 0..nn {
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
            p[i] -= 1e-3 * (m[i] / 0.1) / ((v[i] / 0.001).sqrt() + 1e-7);
        }
        ct.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ct.sort_by(f64::total_cmp);
    println!("rust 1 thread: {:.3} ms {}", ct[15], p[7]);
    for (k, (name, _)) in cases.iter().enumerate() {
        let t = &mut times[k];
        t.sort_by(f64::total_cmp);
        println!("{name}: median {:.3} ms (min {:.3})", t[t.len() / 2], t[0]);
    }
}
