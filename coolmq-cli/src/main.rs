//! The `coolmq` command line: see `coolmq --help` and README's CLI section.

fn main() -> std::process::ExitCode {
    coolmq_cli::main()
}
