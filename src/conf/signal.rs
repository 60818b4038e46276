//! Whether this process only signals the master (`nginx -s ...`).

use ngx::ffi::{ngx_process, ngx_uint_t, NGX_PROCESS_SIGNALLER};

/// Whether this process is `nginx -s quit`, `-s stop` or `-s reopen`: it parses
/// nginx.conf only to find the master's pid file, so the YAML does not matter. A
/// broken ConfigMap must not block logrotate (`reopen`) or a Kubernetes preStop
/// hook (`quit`). `-s reload` still reads it, and a bad file fails it with the
/// located error before any signal is sent, as a bad nginx.conf does.
pub fn signal_needs_no_configuration() -> bool {
    // SAFETY: ngx_process is set by nginx's option parsing before any configuration is read.
    if unsafe { ngx_process } != NGX_PROCESS_SIGNALLER as ngx_uint_t {
        return false;
    }
    // nginx keeps the signal's name in a static; read it from the command line
    // the same way nginx's ngx_get_options does.
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    signal_of(cmdline.split(|&b| b == 0).skip(1)).is_some_and(|s| s != b"reload")
}

/// The argument of `-s` in an nginx command line (options may be grouped, as in
/// `-qs quit`, and an option's argument may be glued to it, as in `-squit`).
fn signal_of<'a>(mut args: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut signal = None;
    while let Some(arg) = args.next() {
        let Some(flags) = arg.strip_prefix(b"-") else { continue };
        for (i, &flag) in flags.iter().enumerate() {
            if matches!(flag, b'p' | b'c' | b'g' | b'e' | b's') {
                let rest = &flags[i + 1..];
                let value = if rest.is_empty() { args.next() } else { Some(rest) };
                if flag == b's' {
                    signal = value;
                }
                break;
            }
        }
    }
    signal
}
