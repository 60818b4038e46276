//! What the engine needs to know of a request, and the parsers nginx uses for
//! cookies and arguments, rewritten over byte slices so that `$cookie_NAME`,
//! `$arg_NAME` and our user ids always agree, and so that they can be fuzzed.

use std::net::IpAddr;

/// A borrowed view of one request. Every value is just bytes: nothing here may
/// fail, whatever the client sent (docs/yaml.md, errors).
pub trait RequestView {
    /// The Host, as sent (a port and a trailing dot are ignored; any case).
    fn host(&self) -> &[u8];
    /// Request headers in the order received, with **lowercase** names.
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
    /// Calls `visit` with every header, in order (an implementation may make
    /// this tighter than `headers()`: it is the decision's one pass).
    #[inline]
    fn for_each_header<'a>(&'a self, mut visit: impl FnMut(&'a [u8], &'a [u8])) {
        for (name, value) in self.headers() {
            visit(name, value);
        }
    }
    /// Calls `visit` with the slot `slot_of` gives a header's name and the
    /// header's value, for every header whose name has one, in order: the
    /// decision's one pass. An implementation may read only those headers'
    /// values (nginx's does: about 7 instructions a header fewer).
    #[inline]
    fn for_each_header_in<'a>(
        &'a self,
        mut slot_of: impl FnMut(&[u8]) -> Option<usize>,
        mut visit: impl FnMut(usize, &'a [u8]),
    ) {
        self.for_each_header(|name, value| {
            if let Some(slot) = slot_of(name) {
                visit(slot, value);
            }
        });
    }
    /// The first header with this lowercase name.
    fn header(&self, lowercase_name: &[u8]) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == lowercase_name).map(|(_, v)| v)
    }
    /// The value of a cookie, as `$cookie_NAME` gives it.
    fn cookie(&self, name: &[u8]) -> Option<&[u8]>;
    /// The value of a query argument, as `$arg_NAME` gives it.
    fn arg(&self, name: &[u8]) -> Option<&[u8]>;
    /// The value of an nginx variable (lowercase name), for `user_key: var:NAME`;
    /// None when it is not found or not set.
    fn variable(&self, _lowercase_name: &[u8]) -> Option<&[u8]> {
        None
    }
    /// An id `sticky` mints for a request that carries none, asked by the
    /// decision when it reads the user id and finds none (the same id if asked
    /// again). None where nothing mints: `explain`, `replay`, tests.
    #[inline]
    fn sticky_id(&self) -> Option<&[u8]> {
        None
    }
    /// The client address (after realip), if the connection has one.
    fn client_ip(&self) -> Option<IpAddr>;
    /// The client address as `$remote_addr` prints it.
    fn client_addr_text(&self) -> &[u8];
}

/// The value of cookie `name` in one `Cookie` header value, with the semantics of
/// nginx's `ngx_http_parse_multi_header_lines` (names match case-insensitively).
pub fn cookie_in_header<'a>(header_value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if name.is_empty() || name.len() > header_value.len() {
        return None;
    }
    let end = header_value.len();
    let mut start = 0;
    while start < end {
        let matched = header_value.len() - start >= name.len()
            && header_value[start..start + name.len()].eq_ignore_ascii_case(name);
        if matched {
            let mut p = start + name.len();
            while p < end && header_value[p] == b' ' {
                p += 1;
            }
            if p < end && header_value[p] == b'=' {
                p += 1;
                while p < end && header_value[p] == b' ' {
                    p += 1;
                }
                let last = header_value[p..].iter().position(|&c| c == b';').map_or(end, |i| p + i);
                return Some(&header_value[p..last]);
            }
            // nginx tests `*start++ != '='`: the character after a name with no
            // value is consumed even when it is the `;` that ends the cookie, so
            // in `uid; uid=alice` the second `uid` is skipped with the first.
            start = (p + 1).min(end);
        }
        // skip to the next cookie
        while start < end {
            let c = header_value[start];
            start += 1;
            if c == b';' || c == b',' {
                break;
            }
        }
        while start < end && header_value[start] == b' ' {
            start += 1;
        }
    }
    None
}

/// The value of argument `name` in a query string, with the semantics of nginx's
/// `ngx_http_arg` (names match case-insensitively; the first occurrence wins).
pub fn arg_in_query<'a>(args: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if name.is_empty() || args.len() <= name.len() {
        return None;
    }
    let mut i = 0;
    while i + name.len() < args.len() {
        if (i == 0 || args[i - 1] == b'&')
            && args[i + name.len()] == b'='
            && args[i..i + name.len()].eq_ignore_ascii_case(name)
        {
            let start = i + name.len() + 1;
            let end = args[start..].iter().position(|&c| c == b'&').map_or(args.len(), |p| start + p);
            return Some(&args[start..end]);
        }
        i += 1;
    }
    None
}

/// What nginx makes of one HTTP/1.x request header line (`Name: value`, without
/// its CRLF): `ngx_http_parse_header_line` and `ngx_http_process_request_headers`
/// with `ignore_invalid_headers on` (nginx's default), so that a request written
/// on a command line is the request the module would see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderLine<'a> {
    /// The request keeps the header: its name as sent, and its value without the
    /// spaces before and after it. Only spaces: nginx keeps a tab.
    Kept { name: &'a [u8], value: &'a [u8] },
    /// nginx leaves the header out of the request ("client sent invalid header
    /// line", at info): `byte`, the first of its name that is not a letter, a
    /// digit or `-` (nor `_` with `underscores_in_headers on`).
    Ignored { name: &'a [u8], byte: u8 },
    /// nginx answers 400 Bad Request, so no module ever sees the request.
    Refused(&'static str),
}

/// One request header line as nginx reads it (see [`HeaderLine`]). As in nginx,
/// a line without `:` is a header with an empty value.
pub fn parse_header_line(line: &[u8], underscores_in_headers: bool) -> HeaderLine<'_> {
    if line.iter().any(|&c| c == b'\r' || c == b'\n') {
        return HeaderLine::Refused("CR or LF would end the header line there");
    }
    let name_end = line.iter().position(|&c| c == b':').unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return HeaderLine::Refused("a header line must begin with its name");
    }
    if name.iter().any(|&c| c <= b' ' || c == 0x7f) {
        return HeaderLine::Refused("a header name cannot hold a space or a control character");
    }
    let value = line.get(name_end + 1..).unwrap_or_default();
    if value.contains(&0) {
        return HeaderLine::Refused("a header value cannot hold a NUL byte");
    }
    let start = value.iter().position(|&c| c != b' ').unwrap_or(value.len());
    let end = value.iter().rposition(|&c| c != b' ').map_or(start, |last| last + 1);
    let allowed = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || (c == b'_' && underscores_in_headers);
    match name.iter().find(|&&c| !allowed(c)) {
        Some(&byte) => HeaderLine::Ignored { name, byte },
        None => HeaderLine::Kept { name, value: &value[start..end] },
    }
}

/// `$args` of a request whose request target has `query` after its first `?`,
/// as nginx's request-line parser leaves it: a `#` and what follows it are no
/// part of it. Err when nginx answers such a request line with 400 Bad Request
/// (a space would end the request target; control characters are refused).
pub fn args_of_query(query: &[u8]) -> Result<&[u8], &'static str> {
    if query.contains(&b' ') {
        return Err("a space would end the request target (write it as %20 or +)");
    }
    if query.iter().any(|&c| c < b' ' || c == 0x7f) {
        return Err("a request target cannot hold a control character");
    }
    Ok(query.iter().position(|&c| c == b'#').map_or(query, |fragment| &query[..fragment]))
}

/// A request held in owned buffers: for tests, benchmarks and fuzzing, and
/// for the module's copy of an upgraded request (its re-decisions read the copy).
#[derive(Clone, Debug, Default)]
pub struct OwnedRequest {
    pub host: Vec<u8>,
    /// (name, value); names are lowercased on insertion.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub args: Vec<u8>,
    pub client: Option<IpAddr>,
    pub client_text: Vec<u8>,
    /// nginx variables, by lowercase name.
    pub variables: Vec<(Vec<u8>, Vec<u8>)>,
    /// The id `sticky` minted for the request, which its view hands the
    /// decision (None: it mints none).
    pub sticky_id: Option<Vec<u8>>,
}

impl OwnedRequest {
    pub fn new(host: &str) -> Self {
        OwnedRequest { host: host.as_bytes().to_vec(), ..Default::default() }
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_ascii_lowercase().into_bytes(), value.as_ref().to_vec()));
        self
    }

    pub fn args(mut self, args: impl AsRef<[u8]>) -> Self {
        self.args = args.as_ref().to_vec();
        self
    }

    pub fn variable(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.variables.push((name.to_ascii_lowercase().into_bytes(), value.as_ref().to_vec()));
        self
    }

    pub fn client(mut self, addr: &str) -> Self {
        let ip: IpAddr = addr.parse().expect("test address");
        self.client_text = ip.to_string().into_bytes();
        self.client = Some(ip);
        self
    }
}

impl RequestView for OwnedRequest {
    fn host(&self) -> &[u8] {
        &self.host
    }
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))
    }
    fn cookie(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers.iter().filter(|(n, _)| n == b"cookie").find_map(|(_, v)| cookie_in_header(v, name))
    }
    fn arg(&self, name: &[u8]) -> Option<&[u8]> {
        arg_in_query(&self.args, name)
    }
    fn variable(&self, name: &[u8]) -> Option<&[u8]> {
        self.variables.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
    fn client_ip(&self) -> Option<IpAddr> {
        self.client
    }
    fn client_addr_text(&self) -> &[u8] {
        &self.client_text
    }
    fn sticky_id(&self) -> Option<&[u8]> {
        self.sticky_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_like_nginx() {
        let h = b"a=1; uid=alice; UIDX=2; b = 3";
        assert_eq!(cookie_in_header(h, b"uid"), Some(&b"alice"[..]));
        assert_eq!(cookie_in_header(h, b"UID"), Some(&b"alice"[..]));
        assert_eq!(cookie_in_header(h, b"uidx"), Some(&b"2"[..]));
        assert_eq!(cookie_in_header(h, b"b"), Some(&b"3"[..]));
        assert_eq!(cookie_in_header(h, b"c"), None);
        assert_eq!(cookie_in_header(b"uid", b"uid"), None);
        assert_eq!(cookie_in_header(b"uid=", b"uid"), Some(&b""[..]));
        assert_eq!(cookie_in_header(b";;;=;uid=x", b"uid"), Some(&b"x"[..]));
        assert_eq!(cookie_in_header(b"x=1, uid=y", b"uid"), Some(&b"y"[..]));
        assert_eq!(cookie_in_header(b"\xff\xfe=1; uid=\xff", b"uid"), Some(&b"\xff"[..]));
    }

    /// ngx_http_parse_multi_header_lines consumes the character after a cookie
    /// name that has no `=`: `uid; uid=alice` has no uid for nginx, and in
    /// `uid;uid=alice;uid=bob` the first `uid=` it sees is bob's.
    #[test]
    fn a_name_without_value_swallows_the_next_cookie_as_nginx_does() {
        assert_eq!(cookie_in_header(b"uid; uid=alice", b"uid"), None);
        assert_eq!(cookie_in_header(b"uid;uid=alice;uid=bob", b"uid"), Some(&b"bob"[..]));
        assert_eq!(cookie_in_header(b"uid x; uid=alice", b"uid"), Some(&b"alice"[..]), "`x` is consumed, not `;`");
        assert_eq!(cookie_in_header(b"uid,uid=alice", b"uid"), None);
        assert_eq!(cookie_in_header(b"uid ;uid=alice", b"uid"), None);
        assert_eq!(cookie_in_header(b"uidx; uid=alice", b"uid"), Some(&b"alice"[..]));
        assert_eq!(cookie_in_header(b"a=1; uid", b"uid"), None);
    }

    /// ngx_http_parse_header_line strips the spaces around a value (not tabs),
    /// answers 400 to a name with a space or a control character or to an empty
    /// one, and marks other bytes of a name invalid (the header is dropped).
    #[test]
    fn header_lines_like_nginx() {
        let kept = |name: &'static [u8], value: &'static [u8]| HeaderLine::Kept { name, value };
        assert_eq!(parse_header_line(b"X-Beta: on ", false), kept(b"X-Beta", b"on"));
        assert_eq!(parse_header_line(b"X-Beta:   on  x  ", false), kept(b"X-Beta", b"on  x"));
        assert_eq!(parse_header_line(b"X-Beta:on", false), kept(b"X-Beta", b"on"));
        assert_eq!(parse_header_line(b"X-Beta: \ton\t", false), kept(b"X-Beta", b"\ton\t"));
        assert_eq!(parse_header_line(b"X-Beta: a: b", false), kept(b"X-Beta", b"a: b"));
        assert_eq!(parse_header_line(b"X-Beta:   ", false), kept(b"X-Beta", b""));
        assert_eq!(parse_header_line(b"X-Beta", false), kept(b"X-Beta", b""));
        assert_eq!(parse_header_line(b"X-Beta: \xff", false), kept(b"X-Beta", b"\xff"));
        assert_eq!(parse_header_line(b"X_Beta: on", true), kept(b"X_Beta", b"on"));
        assert_eq!(parse_header_line(b"X_Beta: on", false), HeaderLine::Ignored { name: b"X_Beta", byte: b'_' });
        assert_eq!(parse_header_line(b"X.Beta: on", true), HeaderLine::Ignored { name: b"X.Beta", byte: b'.' });
        assert_eq!(parse_header_line(b"X\xe9: on", true), HeaderLine::Ignored { name: b"X\xe9", byte: 0xe9 });
        for refused in
            [&b"X Beta: on"[..], b"X-Beta : on", b" X-Beta: on", b"X\tBeta: on", b": on", b"", b"X-Beta: o\0n"]
        {
            assert!(matches!(parse_header_line(refused, true), HeaderLine::Refused(_)), "{refused:?}");
        }
        assert!(matches!(parse_header_line(b"X-Beta: on\r\nX-Other: 1", true), HeaderLine::Refused(_)));
    }

    #[test]
    fn args_as_the_request_line_leaves_them() {
        assert_eq!(args_of_query(b"a=1&b=%20"), Ok(&b"a=1&b=%20"[..]));
        assert_eq!(args_of_query(b"a=1#frag&b=2"), Ok(&b"a=1"[..]));
        assert_eq!(args_of_query(b"a=\xff"), Ok(&b"a=\xff"[..]));
        for refused in [&b"a=1 "[..], b"a=1 b", b"a=\t1", b"a=1\x7f"] {
            assert!(args_of_query(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn args_like_nginx() {
        let q = b"a=1&uid=bob&UID=2&x";
        assert_eq!(arg_in_query(q, b"uid"), Some(&b"bob"[..]));
        assert_eq!(arg_in_query(q, b"a"), Some(&b"1"[..]));
        assert_eq!(arg_in_query(q, b"x"), None);
        assert_eq!(arg_in_query(b"xuid=1&uid=2", b"uid"), Some(&b"2"[..]));
        assert_eq!(arg_in_query(b"uid=", b"uid"), Some(&b""[..]));
        assert_eq!(arg_in_query(b"uid", b"uid"), None);
        assert_eq!(arg_in_query(b"", b"uid"), None);
    }
}
