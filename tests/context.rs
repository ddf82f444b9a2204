//! The GPU context: adapter errors, limits, error scopes, device loss, read-back and the
//! dispatch split over y/z.

mod common;

use common::*;
use wgtrain::gpu::{grid, run, GpuBuffer, GpuContext, GpuOptions};
use wgtrain::unstable::kernels;
use wgtrain::Error;

#[test]
fn missing_adapter_names_the_fix() {
    let err = GpuContext::with_options(GpuOptions {
        adapter: Some("no-such-adapter-xyz".into()),
        ..Default::default()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NoAdapter { .. }), "{msg}");
    assert!(
        msg.contains("no-such-adapter-xyz") && msg.contains("mesa-vulkan-drivers"),
        "{msg}"
    );
}

#[test]
fn opens_with_the_adapters_real_limits() {
    let ctx = gpu();
    // WebGPU's default is 128 MiB only by coincidence on lavapipe; the storage binding limit
    // must at least hold the 4M-element test tensors.
    assert!(ctx.limits().max_storage_buffer_binding_size >= 16 << 20);
    assert!(!ctx.adapter_name().is_empty());
}

#[test]
fn oversized_buffer_is_an_error_and_the_device_stays_usable() {
    let ctx = gpu();
    let err = GpuBuffer::zeros(ctx, "huge", usize::MAX / 8).unwrap_err();
    assert!(matches!(err, Error::BufferTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("`huge`"), "{err}");
    // A binding over the storage-binding limit is refused when the launch is built.
    let limit = ctx.limits().max_storage_buffer_binding_size as usize / 4;
    if (limit as u64 + 1) * 4 <= ctx.limits().max_buffer_size {
        let big = GpuBuffer::zeros(ctx, "big", limit + 1).unwrap();
        let y = zeros("y", 4);
        let err = kernels::activation_forward(
            ctx,
            wgtrain::ops::Activation::Relu,
            4,
            big.full(),
            y.full(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("max_storage_buffer_binding_size"),
            "{err}"
        );
    }
    let x = upload("x", &[-1.0, 2.0]);
    let y = zeros("y", 2);
    let l = kernels::activation_forward(ctx, wgtrain::ops::Activation::Relu, 2, x.full(), y.full())
        .unwrap();
    run(ctx, &[&l]).unwrap();
    assert_eq!(download(&y), vec![0.0, 2.0]);
}

#[test]
fn validation_errors_become_results() {
    let ctx = gpu();
    // Copying past the end of a buffer is a wgpu validation error; it must come back as Err.
    let small = zeros("small", 4);
    let err = ctx
        .scoped("bad copy", || {
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(small_buffer(&small), 0, small_buffer(&small), 8, 64);
            ctx.queue().submit([enc.finish()]);
        })
        .unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    // And the device still works.
    assert_eq!(download(&upload("after", &[1.0, 2.0])), vec![1.0, 2.0]);
}

fn small_buffer(b: &GpuBuffer) -> &wgpu::Buffer {
    b.wgpu_buffer()
}

#[test]
fn read_back_views_and_bad_views() {
    let buf = upload("data", &(0..300).map(|i| i as f32).collect::<Vec<_>>());
    let v = buf.view(256, 44).unwrap().read::<f32>(gpu()).unwrap();
    assert_eq!(v[0], 256.0);
    assert_eq!(v.len(), 44);
    assert!(buf.view(290, 20).is_err());
    assert!(buf.write(gpu(), 299, &[1.0f32, 2.0]).is_err());
}

#[test]
fn device_loss_is_an_error_not_a_hang() {
    // A private context: destroying it must not disturb the shared one.
    let ctx = GpuContext::new().expect("GPU tests need an adapter");
    let buf = GpuBuffer::from_slice(&ctx, "x", &[1.0f32; 8]).unwrap();
    ctx.destroy();
    let start = std::time::Instant::now();
    let err = buf.read::<f32>(&ctx).unwrap_err();
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        matches!(
            err,
            Error::DeviceLost { .. } | Error::Validation { .. } | Error::ReadBack { .. }
        ),
        "{err}"
    );
    assert!(GpuBuffer::zeros(&ctx, "after loss", 4).is_err());
}

#[test]
fn grid_spreads_over_y_and_z() {
    assert_eq!(grid(0, 65535).unwrap(), [0, 1, 1]);
    assert_eq!(grid(10, 65535).unwrap(), [10, 1, 1]);
    assert_eq!(grid(65536, 65535).unwrap(), [65535, 2, 1]);
    let [x, y, z] = grid(u32::MAX, 65535).unwrap();
    assert!(x as u64 * y as u64 * z as u64 >= u32::MAX as u64 && z <= 65535);
}

#[test]
fn dispatch_over_65535_workgroups_covers_every_element() {
    // 17M elements at 256 per workgroup is 66,407 workgroups: more than one dimension allows.
    let ctx = gpu();
    let n = 17_000_003;
    let x: Vec<f32> = (0..n)
        .map(|i| if i % 2 == 0 { -(i as f32) } else { i as f32 })
        .collect();
    let (gx, gy) = (upload("x", &x), zeros("y", n));
    let l =
        kernels::activation_forward(ctx, wgtrain::ops::Activation::Relu, n, gx.full(), gy.full())
            .unwrap();
    assert!(
        l.grid()[1] > 1,
        "expected a y-split grid, got {:?}",
        l.grid()
    );
    run(ctx, &[&l]).unwrap();
    let y = download(&gy);
    for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
        assert_eq!(b, a.max(0.0), "element {i}");
    }
}

/// Launches count their bindings against the right limits: the parameter block is a storage
/// buffer too, and textures count against the storage-texture limit. Going over either is an
/// error naming the limit, before wgpu sees the layout.
#[test]
fn binding_counts_are_checked_against_the_right_limits() {
    let full = gpu().limits();
    let small = |buffers: u32, textures: u32| {
        GpuContext::with_options(GpuOptions {
            limits: Some(wgpu::Limits {
                max_storage_buffers_per_shader_stage: buffers,
                max_storage_textures_per_shader_stage: textures,
                ..full.clone()
            }),
            ..Default::default()
        })
        .expect("a device with lower limits than the adapter's")
    };
    // `add` binds a, b, y and its parameter block: four storage buffers.
    let add = |ctx: &GpuContext| {
        let (a, y) = (
            GpuBuffer::zeros(ctx, "a", 8).unwrap(),
            GpuBuffer::zeros(ctx, "y", 8).unwrap(),
        );
        kernels::add(ctx, 8, a.full(), a.full(), y.full()).map(|_| ())
    };
    let err = add(&small(3, full.max_storage_textures_per_shader_stage))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4 storage buffers") && err.contains("max_storage_buffers_per_shader_stage"),
        "{err}"
    );
    add(&small(4, full.max_storage_textures_per_shader_stage)).expect("four buffers fit");
    // The texture GEMM's multiply reads two packed textures.
    let gemm = |ctx: &GpuContext| {
        let spec = kernels::GemmSpec::new(8, 8, 8);
        let (a, c) = (
            GpuBuffer::zeros(ctx, "a", 64).unwrap(),
            GpuBuffer::zeros(ctx, "c", 64).unwrap(),
        );
        assert_eq!(kernels::gemm_path(ctx, &spec), kernels::GemmPath::Texture);
        kernels::gemm(ctx, &spec, a.full(), a.full(), None, c.full()).map(|_| ())
    };
    let err = gemm(&small(full.max_storage_buffers_per_shader_stage, 1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 storage textures") && err.contains("max_storage_textures_per_shader_stage"),
        "{err}"
    );
    gemm(&small(full.max_storage_buffers_per_shader_stage, 2)).expect("two textures fit");
}

/// The plan is a choice: forcing the real-GPU plan on this adapter makes GEMMs take the
/// storage-buffer tiles real GPUs run (vec4 register tiles when the rows are whole vec4s,
/// scalar tiles otherwise), and the natural plan follows the adapter (textures on a CPU
/// adapter with subgroups of 8).
#[test]
fn the_plan_can_be_forced_and_the_gemm_path_follows_it() {
    use wgtrain::gpu::AdapterKind;
    use wgtrain::unstable::kernels::{GemmPath, GemmSpec};
    let forced = GpuContext::with_options(GpuOptions {
        plan: Some(AdapterKind::Gpu),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(forced.plan(), AdapterKind::Gpu);
    let spec = GemmSpec::new(128, 128, 784);
    assert_eq!(kernels::gemm_path(&forced, &spec), GemmPath::TiledVec4);
    let odd = GemmSpec::new(128, 10, 127);
    assert_eq!(kernels::gemm_path(&forced, &odd), GemmPath::Tiled);
    let natural = gpu();
    let want = if natural.kind() == AdapterKind::Cpu && natural.subgroup_size() == Some(8) {
        AdapterKind::Cpu
    } else {
        AdapterKind::Gpu
    };
    assert_eq!(natural.plan(), want);
    let path = kernels::gemm_path(natural, &spec);
    assert_eq!(
        path == GemmPath::Texture,
        want == AdapterKind::Cpu,
        "{path:?}"
    );
    // The CPU-adapter plan where the adapter can run it, and a named error where it cannot.
    let cpu = GpuContext::with_options(GpuOptions {
        plan: Some(AdapterKind::Cpu),
        ..Default::default()
    });
    match natural.subgroup_size() {
        Some(8) => assert_eq!(cpu.unwrap().plan(), AdapterKind::Cpu),
        _ => {
            let Err(err) = cpu else {
                panic!("the CPU plan opened without subgroups of 8")
            };
            let err = err.to_string();
            assert!(err.contains("subgroups of 8"), "{err}");
        }
    }
}
