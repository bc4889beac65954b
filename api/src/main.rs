//! `hotline`: the service and its operations tool in one binary.
#![forbid(unsafe_code)]

/// Each worker thread's stack. A live session's webhook futures are deep; tokio's 2 MiB default
/// once overflowed (a process abort takes every call with it), so the commands' futures are on
/// the heap, and this leaves room to spare besides.
const WORKER_STACK_BYTES: usize = 8 * 1024 * 1024;

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(api::cli::main()),
        Err(error) => {
            eprintln!("hotline: could not start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
