//! The cookie and argument parsers against nginx's own C functions, transcribed
//! here statement by statement (`ngx_http_parse_multi_header_lines` and
//! `ngx_http_arg` with `ngx_strlcasestrn`, src/http/ngx_http_parse.c and
//! src/core/ngx_string.c, nginx 1.28), over every short input of a small
//! alphabet of the characters that matter and many random longer ones.
//! t/14-nginx-parity.t compares with nginx itself; this finds the byte where
//! they would part.

use migration_engine::{arg_in_query, cookie_in_header};

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
    // Cases whose answers nginx gave (t/14-nginx-parity.t, README).
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
