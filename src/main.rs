fn main() -> std::process::ExitCode {
    wipehook::cli::main()
}
