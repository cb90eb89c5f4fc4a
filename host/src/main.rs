//! The `wasm-operator` binary: parses the command line and hands over to the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    wasm_operator::cli::main()
}
