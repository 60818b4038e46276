//! nginx access log lines read back through the `log_format` string that wrote
//! them, as a request the engine can decide (`RequestView`).
//!
//! nginx writes each variable with its default escaping (`escape=default`): `"`,
//! `\` and bytes outside printable ASCII as `\xHH`, and `-` for an empty or unset
//! value. So a field ends exactly where the format's next literal text starts
//! (a `"` inside a value is always `\x22`), and the first occurrence of that text
//! is the end of the field.

use std::net::IpAddr;

use memchr::memmem;
use migration_engine::{arg_in_query, cookie_in_header, RequestView};

/// What a variable of the format gives the decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    RemoteAddr,
    /// `$host`: the Host as nginx keeps it.
    Host,
    /// `$http_NAME`: a request header (lowercase, `_` read as `-`).
    Header(Box<[u8]>),
    /// `$cookie_NAME`
    Cookie(Box<[u8]>),
    /// `$arg_NAME`
    Arg(Box<[u8]>),
    /// `$args`, `$query_string`
    Args,
    /// `$request` (`GET /p?q HTTP/1.1`)
    Request,
    /// `$request_uri` (`/p?q`)
    RequestUri,
    /// Any other variable: read over, not used.
    Skip,
}

#[derive(Debug)]
enum Item {
    Literal(Box<[u8]>),
    Var(Var),
}

/// nginx's predefined `combined` format.
pub const COMBINED: &str =
    "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// A compiled `log_format` string.
pub struct LogFormat {
    items: Vec<Item>,
    /// For each item: the finder of the literal that ends it, when it is a
    /// variable followed by a literal.
    ends: Vec<Option<memmem::Finder<'static>>>,
    /// Number of variables (fields of a line).
    vars: usize,
    /// Field indexes of the variables the decision reads.
    remote_addr: Option<usize>,
    host: Option<usize>,
    http_host: Option<usize>,
    http_cookie: Option<usize>,
    headers: Vec<(usize, Box<[u8]>)>,
    cookies: Vec<(usize, Box<[u8]>)>,
    args: Vec<(usize, Box<[u8]>)>,
    query: Option<usize>,
    request_uri: Option<usize>,
    request: Option<usize>,
    /// `replay --host`: the Host of a line that names none.
    default_host: Option<Box<[u8]>>,
}

impl LogFormat {
    /// Compiles FORMAT as written in nginx.conf (the quotes of the directive
    /// left out); `combined` is nginx's predefined format.
    pub fn parse(format: &str) -> Result<LogFormat, String> {
        let format = if format == "combined" { COMBINED } else { format };
        let bytes = format.as_bytes();
        let mut items = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c != b'$' {
                literal.push(c);
                i += 1;
                continue;
            }
            let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                let end = bytes[i + 2..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or_else(|| format!("column {}: `${{` without a closing `}}`", i + 1))?;
                (&format[i + 2..i + 2 + end], i + 3 + end)
            } else {
                let len = bytes[i + 1..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
                (&format[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() {
                return Err(format!("column {}: `$` without a variable name", i + 1));
            }
            if !literal.is_empty() {
                items.push(Item::Literal(std::mem::take(&mut literal).into()));
            } else if matches!(items.last(), Some(Item::Var(_))) {
                return Err(format!(
                    "column {}: ${name} follows another variable with no text between them, so a line cannot be split",
                    i + 1
                ));
            }
            items.push(Item::Var(classify(&name.to_ascii_lowercase())));
            i = next;
        }
        if !literal.is_empty() {
            items.push(Item::Literal(literal.into()));
        }
        let ends = (0..items.len())
            .map(|k| match (&items[k], items.get(k + 1)) {
                (Item::Var(_), Some(Item::Literal(l))) => Some(memmem::Finder::new(&**l).into_owned()),
                _ => None,
            })
            .collect();
        let mut f = LogFormat {
            items,
            ends,
            vars: 0,
            remote_addr: None,
            host: None,
            http_host: None,
            http_cookie: None,
            headers: Vec::new(),
            cookies: Vec::new(),
            args: Vec::new(),
            query: None,
            request_uri: None,
            request: None,
            default_host: None,
        };
        let vars: Vec<Var> = f
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Var(v) => Some(v.clone()),
                Item::Literal(_) => None,
            })
            .collect();
        f.vars = vars.len();
        for (k, var) in vars.into_iter().enumerate() {
            match var {
                Var::RemoteAddr => f.remote_addr = f.remote_addr.or(Some(k)),
                Var::Host => f.host = f.host.or(Some(k)),
                Var::Header(name) => {
                    if &*name == b"host" {
                        f.http_host = f.http_host.or(Some(k));
                    }
                    if &*name == b"cookie" {
                        f.http_cookie = f.http_cookie.or(Some(k));
                    }
                    f.headers.push((k, name));
                }
                Var::Cookie(name) => f.cookies.push((k, name)),
                Var::Arg(name) => f.args.push((k, name)),
                Var::Args => f.query = f.query.or(Some(k)),
                Var::RequestUri => f.request_uri = f.request_uri.or(Some(k)),
                Var::Request => f.request = f.request.or(Some(k)),
                Var::Skip => {}
            }
        }
        Ok(f)
    }

    /// Whether the format gives the decision a Host (`$host` or `$http_host`).
    pub fn has_host(&self) -> bool {
        self.host.is_some() || self.http_host.is_some()
    }

    /// The Host of a request whose line names none: every line when the format
    /// has neither `$host` nor `$http_host`, else a line whose field is `-` or empty.
    pub fn set_default_host(&mut self, host: &[u8]) {
        self.default_host = Some(host.into());
    }

    /// Splits a line into its fields (unescaped where needed, into `scratch`).
    /// False when the line does not follow the format.
    pub fn split(&self, line: &[u8], fields: &mut Vec<Field>, scratch: &mut Vec<u8>) -> bool {
        fields.clear();
        scratch.clear();
        let mut pos = 0;
        for (k, item) in self.items.iter().enumerate() {
            match item {
                Item::Literal(l) => {
                    if !line[pos..].starts_with(l) {
                        return false;
                    }
                    pos += l.len();
                }
                Item::Var(var) => {
                    let end = match &self.ends[k] {
                        Some(finder) => match finder.find(&line[pos..]) {
                            Some(at) => pos + at,
                            None => return false,
                        },
                        None => line.len(),
                    };
                    let value = &line[pos..end];
                    fields.push(if value == b"-" {
                        Field::ABSENT
                    } else if *var != Var::Skip && memchr::memchr(b'\\', value).is_some() {
                        let start = scratch.len();
                        unescape(value, scratch);
                        Field { start: start as u32, end: scratch.len() as u32, scratch: true, present: true }
                    } else {
                        Field { start: pos as u32, end: end as u32, scratch: false, present: true }
                    });
                    pos = end;
                }
            }
        }
        pos == line.len() && fields.len() == self.vars
    }

    /// The request a split line describes.
    pub fn view<'a>(&'a self, line: &'a [u8], fields: &'a [Field], scratch: &'a [u8]) -> LineRequest<'a> {
        let mut r = LineRequest { format: self, line, fields, scratch, client: None };
        r.client = r.field(self.remote_addr).and_then(parse_ip);
        r
    }
}

fn classify(name: &str) -> Var {
    let lower = |s: &str| -> Box<[u8]> { s.as_bytes().into() };
    match name {
        "remote_addr" => Var::RemoteAddr,
        "host" => Var::Host,
        "args" | "query_string" => Var::Args,
        "request" => Var::Request,
        "request_uri" => Var::RequestUri,
        _ => {
            if let Some(h) = name.strip_prefix("http_") {
                Var::Header(h.replace('_', "-").as_bytes().into())
            } else if let Some(c) = name.strip_prefix("cookie_") {
                Var::Cookie(lower(c))
            } else if let Some(a) = name.strip_prefix("arg_") {
                Var::Arg(lower(a))
            } else {
                Var::Skip
            }
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `\xHH` back to the byte nginx escaped; anything else kept as written.
fn unescape(value: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'\\' && value.get(i + 1) == Some(&b'x') {
            if let (Some(h), Some(l)) = (value.get(i + 2).and_then(|&b| hex(b)), value.get(i + 3).and_then(|&b| hex(b)))
            {
                out.push(h << 4 | l);
                i += 4;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
}

fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// One field of a split line: a range of the line, or of the scratch buffer
/// when it had to be unescaped.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    start: u32,
    end: u32,
    scratch: bool,
    present: bool,
}

impl Field {
    const ABSENT: Field = Field { start: 0, end: 0, scratch: false, present: false };
}

/// A log line as the request it records.
pub struct LineRequest<'a> {
    format: &'a LogFormat,
    line: &'a [u8],
    fields: &'a [Field],
    scratch: &'a [u8],
    client: Option<IpAddr>,
}

impl<'a> LineRequest<'a> {
    fn field(&self, index: Option<usize>) -> Option<&'a [u8]> {
        let f = self.fields[index?];
        if !f.present {
            return None;
        }
        let source = if f.scratch { self.scratch } else { self.line };
        Some(&source[f.start as usize..f.end as usize])
    }

    /// The query string: `$args`, else from `$request_uri`, else from `$request`.
    fn query(&self) -> Option<&'a [u8]> {
        if let Some(q) = self.field(self.format.query) {
            return Some(q);
        }
        let uri = match self.field(self.format.request_uri) {
            Some(uri) => uri,
            None => {
                let request = self.field(self.format.request)?;
                let start = memchr::memchr(b' ', request)? + 1;
                let end = memchr::memrchr(b' ', request).filter(|&e| e > start).unwrap_or(request.len());
                &request[start..end]
            }
        };
        memchr::memchr(b'?', uri).map(|q| &uri[q + 1..])
    }
}

impl RequestView for LineRequest<'_> {
    fn host(&self) -> &[u8] {
        let named = |index| self.field(index).filter(|host| !host.is_empty());
        named(self.format.host)
            .or_else(|| named(self.format.http_host))
            .or(self.format.default_host.as_deref())
            .unwrap_or_default()
    }

    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.format.headers.iter().filter_map(|(k, name)| Some((&**name, self.field(Some(*k))?)))
    }

    fn cookie(&self, name: &[u8]) -> Option<&[u8]> {
        if let Some((k, _)) = self.format.cookies.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)) {
            return self.field(Some(*k));
        }
        cookie_in_header(self.field(self.format.http_cookie)?, name)
    }

    fn arg(&self, name: &[u8]) -> Option<&[u8]> {
        if let Some((k, _)) = self.format.args.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)) {
            return self.field(Some(*k));
        }
        arg_in_query(self.query()?, name)
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client
    }

    fn client_addr_text(&self) -> &[u8] {
        self.field(self.format.remote_addr).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(f: &LogFormat, line: &[u8]) -> Option<(Vec<Field>, Vec<u8>)> {
        let (mut fields, mut scratch) = (Vec::new(), Vec::new());
        f.split(line, &mut fields, &mut scratch).then_some((fields, scratch))
    }

    #[test]
    fn combined_with_host_and_user_id() {
        let f = LogFormat::parse(&format!("{COMBINED} \"$host\" \"$http_x_user_id\"")).unwrap();
        let line = br#"10.1.2.3 - - [27/Nov/2026:10:00:00 +0000] "GET /a?beta=1&uid=x HTTP/1.1" 200 12 "-" "curl/8.5 \x22quoted\x22" "api.example" "alice""#;
        let (fields, scratch) = split(&f, line).expect("parses");
        let r = f.view(line, &fields, &scratch);
        assert_eq!(r.host(), b"api.example");
        assert_eq!(r.header(b"x-user-id"), Some(&b"alice"[..]));
        assert_eq!(r.header(b"user-agent"), Some(&b"curl/8.5 \"quoted\""[..]));
        assert_eq!(r.header(b"referer"), None, "- is empty");
        assert_eq!(r.arg(b"beta"), Some(&b"1"[..]));
        assert_eq!(r.client_ip(), Some("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn cookies_args_and_bad_lines() {
        let f = LogFormat::parse("$remote_addr $host $cookie_Canary [$http_cookie] $request_uri ${arg_x}!").unwrap();
        let line = b"::1 h.example always [a=1; uid=bob] /p?q=2&x=3 9!";
        let (fields, scratch) = split(&f, line).expect("parses");
        let r = f.view(line, &fields, &scratch);
        assert_eq!(r.cookie(b"canary"), Some(&b"always"[..]));
        assert_eq!(r.cookie(b"uid"), Some(&b"bob"[..]));
        assert_eq!(r.arg(b"q"), Some(&b"2"[..]));
        assert_eq!(r.arg(b"x"), Some(&b"9"[..]), "$arg_x wins over the query");
        assert!(split(&f, b"::1 h.example always [a=1] /p").is_none());
        assert!(split(&f, b"::1 h.example always [a=1] /p 9!junk").is_none());
        assert!(LogFormat::parse("$remote_addr$host").is_err());
        assert!(LogFormat::parse("${host").is_err());
    }
}
