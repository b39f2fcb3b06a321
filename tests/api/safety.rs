//! Safety interlocks and analyst control (safety issue).
