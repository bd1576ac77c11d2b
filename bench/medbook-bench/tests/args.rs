//! The command line: `--help` answers on stdout, and a bad argument is named beside the usage.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medbook-bench"))
        .args(args)
        .output()
        .expect("medbook-bench runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn help_answers_and_a_bad_argument_is_named() {
    for flag in ["--help", "-h"] {
        let (code, stdout, stderr) = run(&[flag]);
        assert_eq!(code, Some(0), "{flag}: {stderr}");
        assert!(stdout.starts_with("usage: medbook-bench "), "{stdout}");
    }
    for (args, said) in [
        (
            &["--clients", "x"][..],
            "medbook-bench: --clients needs a valid value\n",
        ),
        (
            &["--duration"][..],
            "medbook-bench: --duration needs a valid value\n",
        ),
        (
            &["--bogus"][..],
            "medbook-bench: unknown argument \"--bogus\"\n",
        ),
        (
            &["inproc"][..],
            "medbook-bench: this mode needs --database-url\n",
        ),
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.starts_with(said), "{args:?}: {stderr}");
        assert!(stderr.contains("usage: medbook-bench "), "{stderr}");
    }
}
