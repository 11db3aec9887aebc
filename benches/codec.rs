//! Criterion micro-benchmarks of the messagepack v1 codec (`rust/codec.rs`), the work the native
//! consumer does per delivery off the GIL, and the packers the endpoint and service use.
//!
//! `make bench` runs these with `cargo bench --bench codec`; `benches/report.py` reads
//! `target/criterion/*/*/new/estimates.json`.

use std::hint::black_box;

use _core::codec::{self, ResultExtras};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const TASK_ID: &str = "5c3b7a2e-8a9f-4d1e-9b55-0f3c2a1d4e6f";

/// A small serialized return value, like `ComputeSerializer().serialize(None)`.
const SMALL_DATA: &str = "01\ngANOLg==\n";

fn data_of(len: usize) -> String {
    let mut s = String::from("01\n");
    // base64-like text: what a large DillDataBase64 payload looks like on the wire
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    s.extend((0..len).map(|i| alphabet[i % alphabet.len()] as char));
    s.push('\n');
    s
}

fn error_result() -> Vec<u8> {
    codec::pack_result(
        TASK_ID,
        "Traceback (most recent call last):\n  File \"<string>\", line 1\nZeroDivisionError: x\n",
        ResultExtras {
            error_code: Some("UNKNOWN_TASK_FAILURE"),
            error_message: Some("remote error: ZeroDivisionError('x')"),
            details: Some(r#"{"os":"Linux","python_version":"3.11.7","dill_version":"0.3.9","endpoint_id":"2b2c0f7e-6d55-4f0e-a3f5-9d4c2b1a0e7d"}"#),
            task_statuses: Some(r#"[{"state":"exec_start","time":1700000000.25},{"state":"exec_end","time":1700000000.5}]"#),
        },
    )
    .expect("valid result")
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_decode");
    g.throughput(Throughput::Elements(1));
    for (name, body) in [
        (
            "result_small",
            codec::pack_result(TASK_ID, SMALL_DATA, ResultExtras::default()).unwrap(),
        ),
        ("result_error", error_result()),
        (
            "task_small",
            codec::pack_task(TASK_ID, &data_of(200)).unwrap(),
        ),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| codec::decode(black_box(body)).unwrap())
        });
    }
    g.finish();

    // bytes/s on large payloads: escaping-free base64 text dominates, as on real results
    let mut g = c.benchmark_group("codec_decode_bytes");
    for len in [1024usize, 64 * 1024] {
        let body = codec::pack_result(TASK_ID, &data_of(len), ResultExtras::default()).unwrap();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &body, |b, body| {
            b.iter(|| codec::decode(black_box(body)).unwrap())
        });
    }
    g.finish();
}

fn bench_pack(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_pack");
    g.throughput(Throughput::Elements(1));
    let task_buffer = data_of(200);
    g.bench_function("result_small", |b| {
        b.iter(|| {
            codec::pack_result(
                black_box(TASK_ID),
                black_box(SMALL_DATA),
                ResultExtras::default(),
            )
            .unwrap()
        })
    });
    g.bench_function("task_small", |b| {
        b.iter(|| codec::pack_task(black_box(TASK_ID), black_box(&task_buffer)).unwrap())
    });
    let extras = ResultExtras {
        details: Some(r#"{"os":"Linux","python_version":"3.11.7","dill_version":"0.3.9"}"#),
        ..ResultExtras::default()
    };
    g.bench_function("result_with_details", |b| {
        b.iter(|| codec::pack_result(black_box(TASK_ID), black_box(SMALL_DATA), extras).unwrap())
    });
    g.bench_function("canonical_uuid", |b| {
        b.iter(|| {
            codec::canonical_uuid_str(black_box("5C3B7A2E8A9F4D1E9B550F3C2A1D4E6F"), "task_id")
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_pack);
criterion_main!(benches);
