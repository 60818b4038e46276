//! The parameters of the directives, read as nginx reads sizes and times.

use ngx::ffi::{ngx_conf_t, ngx_pagesize, ngx_parse_size, ngx_parse_time, ngx_str_t};
use ngx::ngx_string;

/// `zone=` when not given (docs/module.md).
pub const DEFAULT_ZONE: (ngx_str_t, usize) = (ngx_string!("migration"), 1024 * 1024);

/// The directive's arguments after its name.
///
/// # Safety
/// `cf` must be the configuration being parsed, inside a directive handler.
pub unsafe fn arguments<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: inside a directive handler, cf->args holds the directive name and its
    // arguments as ngx_str_t, allocated from the configuration pool.
    let args: &[ngx_str_t] = unsafe { (*(*cf).args).as_slice() };
    &args[1..]
}

/// `NAME:SIZE`, SIZE as nginx reads sizes (`64k`, `1m`), at least 8 pages as
/// nginx's own zones require.
pub fn parse_zone(value: &[u8]) -> Result<(ngx_str_t, usize), String> {
    let text = String::from_utf8_lossy(value);
    let colon = value.iter().rposition(|&b| b == b':').ok_or("the zone needs a size, as in zone=migration:1m")?;
    if colon == 0 {
        return Err("the zone needs a name, as in zone=migration:1m".into());
    }
    let mut size = ngx_str_t { len: value.len() - colon - 1, data: value[colon + 1..].as_ptr() as *mut u8 };
    // SAFETY: ngx_parse_size only reads `size`.
    let bytes = unsafe { ngx_parse_size(&mut size) };
    // SAFETY: ngx_pagesize is set by ngx_os_init before the configuration is read.
    let minimum = 8 * unsafe { ngx_pagesize } as isize;
    if bytes < 0 {
        return Err(format!("invalid zone size in \"{text}\""));
    }
    if bytes < minimum {
        return Err(format!("zone size must be at least {}k", minimum / 1024));
    }
    Ok((ngx_str_t { len: colon, data: value.as_ptr() as *mut u8 }, bytes as usize))
}

/// `max_size=`: an nginx size (`16m`, `512k`), at least 1k.
pub fn parse_max_size(value: &[u8]) -> Result<u64, String> {
    let mut size = ngx_str_t { len: value.len(), data: value.as_ptr() as *mut u8 };
    // SAFETY: ngx_parse_size only reads `size`.
    let bytes = unsafe { ngx_parse_size(&mut size) };
    if bytes < 1024 {
        return Err("max_size must be a size of at least 1k, as in max_size=16m".into());
    }
    Ok(bytes as u64)
}

/// Splits `name=value` at its first `=`.
pub trait SplitOnceAt {
    fn split_once_at(&self, separator: u8) -> Option<(&[u8], &[u8])>;
}

impl SplitOnceAt for [u8] {
    fn split_once_at(&self, separator: u8) -> Option<(&[u8], &[u8])> {
        let at = self.iter().position(|&b| b == separator)?;
        Some((&self[..at], &self[at + 1..]))
    }
}

/// An nginx time (`500ms`, `2s`, `1m`), at least 100ms.
pub fn parse_interval(value: &[u8]) -> Result<u64, String> {
    let mut text = ngx_str_t { len: value.len(), data: value.as_ptr() as *mut u8 };
    // SAFETY: ngx_parse_time only reads `text`; 0 asks for milliseconds.
    let ms = unsafe { ngx_parse_time(&mut text, 0) };
    if ms < 0 {
        return Err("invalid interval; write it as nginx times are written, e.g. watch=2s or watch=500ms".into());
    }
    if ms < 100 {
        return Err("the watch interval must be at least 100ms".into());
    }
    Ok(ms as u64)
}
