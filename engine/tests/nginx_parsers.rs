//! The cookie, argument and header-line parsers against nginx's own C functions,
//! transcribed here statement by statement (`ngx_http_parse_multi_header_lines`,
//! `ngx_http_arg` with `ngx_strlcasestrn` and `ngx_http_parse_header_line`,
//! src/http/ngx_http_parse.c and src/core/ngx_string.c, nginx 1.28), over every
//! short input of a small alphabet of the characters that matter and many random
//! longer ones.
//! t/14-nginx-parity.t compares with nginx itself; this finds the byte where
//! they would part.

use migration_engine::{arg_in_query, cookie_in_header, parse_header_line, HeaderLine};

/// `ngx_strncasecmp` over at most `n` bytes, both sides NUL-terminated as nginx's
/// buffers are (a side that ends first compares as NUL).
fn ngx_strncasecmp(s1: &[u8], s2: &[u8], n: usize) -> i32 {
    let at = |s: &[u8], i: usize| -> u32 { s.get(i).copied().map_or(0, u32::from) };
    let lower = |c: u32| if (b'A' as u32..=b'Z' as u32).contains(&c) { c | 0x20 } else { c };
    for i in 0..n {
        let (c1, c2) = (lower(at(s1, i)), lower(at(s2, i)));
        if c1 == c2 {
            if c1 != 0 {
                continue;
            }
            return 0;
        }
        return c1 as i32 - c2 as i32;
    }
    0
}

/// `ngx_http_parse_multi_header_lines` for one Cookie header and a value wanted.
fn nginx_cookie<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if name.len() > value.len() {
        return None;
    }
    let end = value.len();
    let mut start = 0;
    while start < end {
        'skip: {
            if ngx_strncasecmp(&value[start..], name, name.len()) != 0 {
                break 'skip;
            }
            start += name.len();
            while start < end && value[start] == b' ' {
                start += 1;
            }
            // if (start == end || *start++ != '=') goto skip;
            if start == end {
                break 'skip;
            }
            let c = value[start];
            start += 1;
            if c != b'=' {
                break 'skip;
            }
            while start < end && value[start] == b' ' {
                start += 1;
            }
            let mut last = start;
            while last < end && value[last] != b';' {
                last += 1;
            }
            return Some(&value[start..last]);
        }
        // skip:
        while start < end {
            let ch = value[start];
            start += 1;
            if ch == b';' || ch == b',' {
                break;
            }
        }
        while start < end && value[start] == b' ' {
            start += 1;
        }
    }
    None
}

/// `ngx_strlcasestrn(s1, last, s2, n)`: the first position in `s[from..last]`
/// where `s2` (n + 1 bytes) starts, case-insensitively.
fn ngx_strlcasestrn(s: &[u8], from: usize, last: usize, s2: &[u8], n: usize) -> Option<usize> {
    let lower = |c: u8| if c.is_ascii_uppercase() { c | 0x20 } else { c };
    let c2 = lower(s2[0]);
    let last = last.checked_sub(n)?;
    let mut s1 = from;
    loop {
        let c1 = loop {
            if s1 >= last {
                return None;
            }
            let c1 = lower(s[s1]);
            s1 += 1;
            if c1 == c2 {
                break c1;
            }
        };
        let _ = c1;
        if ngx_strncasecmp(&s[s1..], &s2[1..], n) == 0 {
            return Some(s1 - 1);
        }
    }
}

/// `ngx_http_arg`.
fn nginx_arg<'a>(args: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if args.is_empty() {
        return None;
    }
    let len = name.len();
    let last = args.len();
    let mut p = 0;
    while p < last {
        p = ngx_strlcasestrn(args, p, last - 1, name, len - 1)?;
        if (p == 0 || args[p - 1] == b'&') && args[p + len] == b'=' {
            let start = p + len + 1;
            let end = args[p..].iter().position(|&c| c == b'&').map_or(last, |i| p + i);
            return Some(&args[start..end]);
        }
        p += 1;
    }
    None
}

/// What `ngx_http_parse_header_line` returns for one header line.
#[derive(Debug, PartialEq, Eq)]
enum NginxHeader {
    /// NGX_OK: where the name and the value lie in the line, and `r->invalid_header`.
    Header { name: std::ops::Range<usize>, value: std::ops::Range<usize>, invalid: bool },
    /// NGX_HTTP_PARSE_HEADER_DONE: the empty line that ends the headers.
    Done,
    /// NGX_HTTP_PARSE_INVALID_HEADER: nginx answers 400.
    Invalid,
}

/// `ngx_http_parse_header_line` over `line` followed by CRLF, for a request
/// (no upstream, so no IIS "HTTP/" line); the hash and lowercase copy left out.
fn nginx_header_line(line: &[u8], allow_underscores: bool) -> NginxHeader {
    #[derive(Clone, Copy)]
    enum State {
        Start,
        Name,
        SpaceBeforeValue,
        Value,
        SpaceAfterValue,
        AlmostDone,
        HeaderAlmostDone,
    }
    // The bytes of nginx's `lowcase` table that are not NUL.
    let lowcase = |ch: u8| ch.is_ascii_alphanumeric() || ch == b'-';
    let mut input = line.to_vec();
    input.extend_from_slice(b"\r\n");
    let (mut name_start, mut name_end, mut start, mut end) = (0, 0, 0, 0);
    let mut invalid = false;
    let mut state = State::Start;
    for (p, &ch) in input.iter().enumerate() {
        match state {
            State::Start => {
                name_start = p;
                invalid = false;
                match ch {
                    b'\r' => state = State::HeaderAlmostDone,
                    b'\n' => return NginxHeader::Done,
                    _ => {
                        state = State::Name;
                        if lowcase(ch) {
                            continue;
                        }
                        if ch == b'_' {
                            invalid |= !allow_underscores;
                            continue;
                        }
                        if ch <= 0x20 || ch == 0x7f || ch == b':' {
                            return NginxHeader::Invalid;
                        }
                        invalid = true;
                    }
                }
            }
            State::Name => {
                if lowcase(ch) {
                    continue;
                }
                if ch == b'_' {
                    invalid |= !allow_underscores;
                    continue;
                }
                if ch == b':' {
                    name_end = p;
                    state = State::SpaceBeforeValue;
                    continue;
                }
                if ch == b'\r' || ch == b'\n' {
                    (name_end, start, end) = (p, p, p);
                    if ch == b'\n' {
                        break;
                    }
                    state = State::AlmostDone;
                    continue;
                }
                if ch <= 0x20 || ch == 0x7f {
                    return NginxHeader::Invalid;
                }
                invalid = true;
            }
            State::SpaceBeforeValue => match ch {
                b' ' => {}
                b'\r' | b'\n' => {
                    (start, end) = (p, p);
                    if ch == b'\n' {
                        break;
                    }
                    state = State::AlmostDone;
                }
                0 => return NginxHeader::Invalid,
                _ => {
                    start = p;
                    state = State::Value;
                }
            },
            State::Value => match ch {
                b' ' => {
                    end = p;
                    state = State::SpaceAfterValue;
                }
                b'\r' => {
                    end = p;
                    state = State::AlmostDone;
                }
                b'\n' => {
                    end = p;
                    break;
                }
                0 => return NginxHeader::Invalid,
                _ => {}
            },
            State::SpaceAfterValue => match ch {
                b' ' => {}
                b'\r' => state = State::AlmostDone,
                b'\n' => break,
                0 => return NginxHeader::Invalid,
                _ => state = State::Value,
            },
            State::AlmostDone => match ch {
                b'\n' => break,
                b'\r' => {}
                _ => return NginxHeader::Invalid,
            },
            State::HeaderAlmostDone => {
                return if ch == b'\n' { NginxHeader::Done } else { NginxHeader::Invalid };
            }
        }
    }
    NginxHeader::Header { name: name_start..name_end, value: start..end, invalid }
}

/// Every string over `alphabet` up to `max` bytes long.
fn all_strings(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let mut layer = vec![Vec::new()];
    for _ in 0..max {
        layer = layer
            .iter()
            .flat_map(|s: &Vec<u8>| {
                alphabet.iter().map(move |&c| {
                    let mut t = s.clone();
                    t.push(c);
                    t
                })
            })
            .collect();
        out.extend(layer.iter().cloned());
    }
    out
}

fn random_strings(alphabet: &[u8], count: usize, max: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| (0..next() as usize % (max + 1)).map(|_| alphabet[next() as usize % alphabet.len()]).collect())
        .collect()
}

#[track_caller]
fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_transcriptions_agree_with_nginx_on_known_cases() {
    // Cases whose answers nginx gave (t/14-nginx-parity.t, docs/yaml.md).
    assert_eq!(nginx_cookie(b"uid; uid=alice", b"uid"), None);
    assert_eq!(nginx_cookie(b"uid;uid=alice;uid=bob", b"uid"), Some(&b"bob"[..]));
    assert_eq!(nginx_cookie(b"a=1; UID = x ;b", b"uid"), Some(&b"x "[..]));
    assert_eq!(nginx_arg(b"xuid=1&uid=2", b"uid"), Some(&b"2"[..]));
    assert_eq!(nginx_arg(b"uid", b"uid"), None);
    assert_eq!(nginx_arg(b"UID=", b"uid"), Some(&b""[..]));
}

/// The engine never asks for an empty name (user_key refuses one); if asked,
/// nothing matches, where nginx's loops would match at every position.
#[test]
fn an_empty_name_matches_nothing() {
    assert_eq!(cookie_in_header(b"=x; a=1", b""), None);
    assert_eq!(arg_in_query(b"=x&a=1", b""), None);
}

#[test]
fn cookies_agree_with_nginx_on_every_short_header() {
    let names: [&[u8]; 4] = [b"u", b"ui", b"uid", b"UId"];
    let mut checked = 0;
    let inputs = all_strings(b"uiU= ;,x", 6).into_iter().chain(random_strings(b"uidUID= ;,xa", 20_000, 24));
    for value in inputs {
        for name in names {
            assert_eq!(
                cookie_in_header(&value, name),
                nginx_cookie(&value, name),
                "{:?} in {:?}",
                show(name),
                show(&value)
            );
            checked += 1;
        }
    }
    assert!(checked > 1_000_000, "{checked}");
}

#[test]
fn arguments_agree_with_nginx_on_every_short_query() {
    let names: [&[u8]; 4] = [b"u", b"ui", b"uid", b"UId"];
    let inputs = all_strings(b"uiU=&x", 7).into_iter().chain(random_strings(b"uidUID=&xa", 20_000, 24));
    for args in inputs {
        for name in names {
            assert_eq!(arg_in_query(&args, name), nginx_arg(&args, name), "{:?} in {:?}", show(name), show(&args));
        }
    }
}

/// Every short line of the bytes that matter to nginx's header parser, with and
/// without `underscores_in_headers`: kept with the same name and value, dropped
/// as invalid, or refused with 400, as nginx does (`ignore_invalid_headers on`).
#[test]
fn header_lines_agree_with_nginx_on_every_short_line() {
    let alphabet = b"aZ-_:. \t\x00\x7f\xe9";
    let inputs = all_strings(alphabet, 6).into_iter().chain(random_strings(b"aZ9-_:. \t\x00", 20_000, 24));
    let mut checked = 0;
    for line in inputs {
        if line.is_empty() {
            continue; // the empty line that ends the headers: no header at all
        }
        for underscores in [false, true] {
            let ours = parse_header_line(&line, underscores);
            let expected = match nginx_header_line(&line, underscores) {
                NginxHeader::Header { name, value, invalid: false } => {
                    HeaderLine::Kept { name: &line[name], value: &line[value] }
                }
                NginxHeader::Header { name, invalid: true, .. } => match ours {
                    HeaderLine::Ignored { byte, .. } => HeaderLine::Ignored { name: &line[name], byte },
                    _ => panic!("{:?}: nginx drops it as invalid, ours: {ours:?}", show(&line)),
                },
                NginxHeader::Invalid => match ours {
                    HeaderLine::Refused(why) => HeaderLine::Refused(why),
                    _ => panic!("{:?}: nginx answers 400, ours: {ours:?}", show(&line)),
                },
                NginxHeader::Done => unreachable!("only an empty line ends the headers"),
            };
            assert_eq!(ours, expected, "{:?} (underscores_in_headers {underscores})", show(&line));
            checked += 1;
        }
    }
    assert!(checked > 1_000_000, "{checked}");
}
