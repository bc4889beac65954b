//! `bench`: the benchmark, `cargo run -p bench --release` (see BENCHMARKS.md).
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bench::main().await
}
