//! Criterion micro-benchmarks of the per-batch bookkeeping of the native transport: what the
//! consumer's tokio task and `next_batch` do for one prefetch window, independent of the network.
//!
//! * `decode_window`: decoding a window of deliveries (the consumer decodes every body in Rust);
//! * `tag_space`: assigning Consumer-wide tags to a batch, handing it out, one `ack_through`;
//! * `ack_out_of_order`: single acks in completion order (the endpoint acks each task when its
//!   result is confirmed, not in delivery order);
//! * `headers`: AMQP header tables of a submit batch, both directions (service → endpoint).

use std::hint::black_box;

use _core::codec::{self, ResultExtras};
use _core::headers::{from_field_table, to_field_table, HeaderValue};
use _core::tags::{AckTracker, TagSpace};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const WINDOWS: [usize; 2] = [128, 4096];

fn task_id(i: usize) -> String {
    format!("5c3b7a2e-8a9f-4d1e-9b55-{i:012x}")
}

fn bodies(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            codec::pack_result(&task_id(i), "01\ngANOLg==\n", ResultExtras::default()).unwrap()
        })
        .collect()
}

fn bench_decode_window(c: &mut Criterion) {
    let mut g = c.benchmark_group("batching_decode_window");
    for n in WINDOWS {
        let window = bodies(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &window, |b, window| {
            b.iter(|| {
                window
                    .iter()
                    .map(|body| codec::decode(black_box(body)).unwrap())
                    .collect::<Vec<_>>()
            })
        });
    }
    g.finish();
}

fn bench_tag_space(c: &mut Criterion) {
    let mut g = c.benchmark_group("batching_tag_space");
    for n in WINDOWS {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                let mut tags = TagSpace::new();
                tags.new_epoch();
                let mut last = 0;
                for amqp_tag in 1..=n as u64 {
                    last = tags.assign(black_box(amqp_tag));
                }
                tags.handed_out(last);
                black_box(tags.plan_ack_through(last))
            })
        });
    }
    g.finish();
}

/// A fixed permutation of 1..=n (a linear congruential walk), so runs are comparable.
fn completion_order(n: usize) -> Vec<u64> {
    let mut order: Vec<u64> = (1..=n as u64).collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..n).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    order
}

fn bench_ack_out_of_order(c: &mut Criterion) {
    let mut g = c.benchmark_group("batching_ack_out_of_order");
    for n in WINDOWS {
        let order = completion_order(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &order, |b, order| {
            b.iter(|| {
                let mut acks = AckTracker::default();
                for &tag in order {
                    black_box(acks.settle_one(tag));
                }
                acks
            })
        });
    }
    g.finish();
}

fn task_headers(i: usize) -> Vec<(String, HeaderValue)> {
    vec![
        (
            "function_uuid".into(),
            HeaderValue::Str("0f6c1e9a-3b7d-4c2e-8f1a-5d9b3c7e2a10".into()),
        ),
        (
            "resource_specification".into(),
            HeaderValue::Str("{}".into()),
        ),
        (
            "result_serializers".into(),
            HeaderValue::List(vec![HeaderValue::Str(
                "volley.serialize.concretes.DillDataBase64".into(),
            )]),
        ),
        ("task_uuid".into(), HeaderValue::Str(task_id(i))),
    ]
}

fn bench_headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("batching_headers");
    let n = 128; // the SDK's default batch size
    let batch: Vec<_> = (0..n).map(task_headers).collect();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("to_field_table_128", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|h| to_field_table(black_box(h)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    let tables: Vec<_> = batch.iter().map(|h| to_field_table(h).unwrap()).collect();
    g.bench_function("from_field_table_128", |b| {
        b.iter(|| {
            tables
                .iter()
                .map(|t| from_field_table(black_box(t)))
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_decode_window,
    bench_tag_space,
    bench_ack_out_of_order,
    bench_headers
);
criterion_main!(benches);
