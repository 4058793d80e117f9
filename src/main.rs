//! `devbox`: parse the command line, run it, report errors, exit with the right code.

fn main() {
    let code = devbox::run(std::env::args_os());
    std::process::exit(code);
}
