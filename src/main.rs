//! The `trainctl` binary: parses arguments, runs the command, maps the outcome to an exit
//! code. All behaviour lives in the library.

fn main() {
    let code = match trainctl::cli::parse_args() {
        Ok(cli) => {
            let json = cli.global.json;
            trainctl::cli::report(trainctl::cli::run(&cli), json)
        }
        Err(code) => code,
    };
    std::process::exit(code);
}
