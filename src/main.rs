fn main() -> std::process::ExitCode {
    // glibc gives every thread that allocates its own malloc arena (up to
    // 8 x cores); with actix, tokio and SQLite threads that multiplies the
    // resident set for no gain (measured: 174 MiB -> 29 MiB peak in the
    // storm benchmark). Two arenas, set before any thread exists.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    wipehook::cli::main()
}
