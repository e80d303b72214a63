//! The gateway's message text, without the network: a 64 KiB wire chunk's JSON written and
//! read (`protocol::wire_chunk`), and the payload body around it written and read
//! (`protocol::body`), each next to the `serde_json` way it replaced, in MB of chunk per second.
//!
//! `cargo bench --bench body_codec [-- ROUNDS]`

use std::hint::black_box;
use std::time::Instant;

use serde_json::{json, Value};
use tdx_volt::protocol::body::Body;
use tdx_volt::protocol::wire_chunk;

const CHUNK: usize = 64 * 1024;

fn main() {
    let rounds: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    let text = wire_chunk::to_json(&chunk);
    let body = Body::Payload {
        json_payload: text.clone(),
    }
    .to_json();

    println!("64 KiB chunk, {rounds} rounds each, MB of chunk per second:");
    time("chunk to JSON, wire_chunk::to_json", rounds, || {
        wire_chunk::to_json(black_box(&chunk)).len()
    });
    time("chunk to JSON, serde_json + base64", rounds, || {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(black_box(&chunk));
        serde_json::to_string(&json!({ "chunk": b64 })).map_or(0, |t| t.len())
    });
    time("JSON to chunk, wire_chunk::from_json", rounds, || {
        wire_chunk::from_json(black_box(&text)).map_or(0, |c| c.len())
    });
    time("JSON to chunk, serde_json + base64", rounds, || {
        use base64::Engine as _;
        let value: Value = serde_json::from_str(black_box(&text)).unwrap_or_default();
        value["chunk"].as_str().map_or(0, |b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_or(0, |c| c.len())
        })
    });
    time("payload body written, Body::to_json", rounds, || {
        Body::Payload {
            json_payload: black_box(&text).clone(),
        }
        .to_json()
        .len()
    });
    time(
        "payload body read, Body::parse",
        rounds,
        || match Body::parse(black_box(&body)) {
            Ok(Body::Payload { json_payload }) => json_payload.len(),
            _ => 0,
        },
    );
    time("payload body read, serde_json", rounds, || {
        let mut value: Value = serde_json::from_slice(black_box(&body)).unwrap_or_default();
        match value["method_payload"]["json_payload"].take() {
            Value::String(payload) => payload.len(),
            _ => 0,
        }
    });
}

/// Runs `step` `rounds` times after a warm-up and prints its rate in MB of chunk per second.
fn time(what: &str, rounds: u32, mut step: impl FnMut() -> usize) {
    let mut sink = 0;
    for _ in 0..rounds / 10 + 1 {
        sink += step();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        sink += step();
    }
    let seconds = started.elapsed().as_secs_f64();
    let mb = (CHUNK as f64 * f64::from(rounds)) / 1e6;
    println!(
        "{what:<40} {:>8.0} MB/s  {:>7.1} us each",
        mb / seconds,
        seconds * 1e6 / f64::from(rounds)
    );
    black_box(sink);
}
