//! `server_name`s, copied while nginx.conf is read and matched against a
//! request's Host as nginx matches them (`migration_service auto`).

use core::ptr;

use ngx::ffi::{ngx_http_server_name_t, ngx_regex_t, ngx_str_t};

/// One `server_name`, matched as nginx matches it.
pub enum ServerName {
    /// `api.example.com`, lowercase.
    Exact(Vec<u8>),
    /// `*.example.com`: any subdomain (`.example.com` kept), not the bare name.
    AnySubdomain(Vec<u8>),
    /// `.example.com`: the name (`example.com` kept) and every subdomain.
    NameAndSubdomains(Vec<u8>),
    /// `www.example.*` (`www.example.` kept).
    AnyTail(Vec<u8>),
    /// `~regex`: its compiled expression, alive as long as the cycle.
    Regex(*mut ngx_regex_t),
}

impl ServerName {
    /// The engine's view of it, for reachability.
    pub fn pattern(&self) -> migration_engine::reach::ServerNamePattern {
        use migration_engine::reach::ServerNamePattern as P;
        match self {
            ServerName::Exact(n) => P::Exact(n.clone()),
            ServerName::AnySubdomain(s) => P::AnySubdomain(s.clone()),
            ServerName::NameAndSubdomains(d) => P::NameAndSubdomains(d.clone()),
            ServerName::AnyTail(p) => P::AnyTail(p.clone()),
            ServerName::Regex(_) => P::Any,
        }
    }

    pub fn new(name: &ngx_http_server_name_t) -> ServerName {
        if !name.regex.is_null() {
            // SAFETY: a regex server name's ngx_http_regex_t lives in the cycle's pool.
            return ServerName::Regex(unsafe { (*name.regex).regex });
        }
        let text = name.name.as_bytes().to_ascii_lowercase();
        if let Some(suffix) = text.strip_prefix(b"*") {
            ServerName::AnySubdomain(suffix.to_vec())
        } else if let Some(domain) = text.strip_prefix(b".") {
            ServerName::NameAndSubdomains(domain.to_vec())
        } else if let Some(prefix) = text.strip_suffix(b"*") {
            ServerName::AnyTail(prefix.to_vec())
        } else {
            ServerName::Exact(text)
        }
    }

    /// Against a Host as nginx keeps it (lowercase, no port).
    pub fn matches(&self, host: &[u8]) -> bool {
        match self {
            ServerName::Exact(name) => host == name.as_slice(),
            ServerName::AnySubdomain(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            ServerName::NameAndSubdomains(domain) => {
                host == domain.as_slice()
                    || (host.len() > domain.len() + 1
                        && host.ends_with(domain)
                        && host[host.len() - domain.len() - 1] == b'.')
            }
            ServerName::AnyTail(prefix) => host.len() > prefix.len() && host.starts_with(prefix),
            ServerName::Regex(regex) => regex_matches(*regex, host),
        }
    }
}

#[cfg(ngx_feature = "pcre2")]
fn regex_matches(regex: *mut ngx_regex_t, host: &[u8]) -> bool {
    let mut subject = ngx_str_t { len: host.len(), data: host.as_ptr() as *mut u8 };
    // SAFETY: the expression lives as long as the cycle; no captures are asked
    // for, so nothing of the request is touched.
    unsafe { ngx::ffi::ngx_regex_exec(regex, &mut subject, ptr::null_mut(), 0) >= 0 }
}

/// Without PCRE2's function the expression cannot be run here: a server block
/// with a regular expression as its name is taken to serve every Host.
#[cfg(not(ngx_feature = "pcre2"))]
fn regex_matches(_regex: *mut ngx_regex_t, _host: &[u8]) -> bool {
    true
}
