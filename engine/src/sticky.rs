//! Sticky ids (docs/yaml.md, `migration.sticky`): a request to a service with
//! `sticky` that carries no id through its cookie `user_key` gets one, 128 random
//! bits written in 22 base64url characters, and is decided exactly as if it had
//! carried it: its next requests, which carry the cookie, hash the same id and
//! land on the same side, on every replica.
//!
//! The decision asks the request for an id ([`RequestView::sticky_id`]) only
//! when it reads the user id and finds none, so a request that carries its
//! cookie parses it once, as without `sticky`. The caller (nginx) supplies the
//! random bytes and sends the cookie; `explain` and `replay` decide a request as
//! if it carried a given id with [`WithUserCookie`].

use std::net::IpAddr;

use crate::compiled::{CompiledConfig, CompiledService};
use crate::config::sticky::{Secure, Sticky};
use crate::config::UserKey;
use crate::decide::ServiceChoice;
use crate::request::RequestView;

/// A minted id: 22 base64url characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StickyId([u8; StickyId::LEN]);

impl StickyId {
    pub const LEN: usize = 22;

    /// The id of 16 random bytes: base64url (RFC 4648 §5) without padding.
    pub fn from_random(bytes: [u8; 16]) -> StickyId {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = [0u8; Self::LEN];
        let mut chars = out.iter_mut();
        // Three bytes make four characters; the last byte makes two (its low two
        // bits followed by four zero bits), and no padding follows.
        for group in bytes.chunks(3) {
            let word = group.iter().enumerate().fold(0u32, |w, (i, &b)| w | u32::from(b) << (16 - 8 * i));
            for (i, c) in chars.by_ref().take(group.len() + 1).enumerate() {
                *c = ALPHABET[(word >> (18 - 6 * i) & 0x3f) as usize];
            }
        }
        StickyId(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Only alphabet characters are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for StickyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's `sticky`, compiled: the cookie's name and its attributes, written
/// once, so that a response adds one header of known parts.
#[derive(Debug)]
pub struct StickyCookie {
    pub name: Box<str>,
    /// `; Max-Age=…; Path=…[; Domain=…]`
    before_secure: Box<str>,
    secure: Secure,
    /// `[; HttpOnly]; SameSite=…`
    after_secure: Box<str>,
}

impl StickyCookie {
    pub(crate) fn new(sticky: &Sticky, key: &UserKey) -> Option<StickyCookie> {
        let UserKey::Cookie(name) = key else { return None };
        let mut before = String::new();
        if sticky.max_age_s > 0 {
            before.push_str(&format!("; Max-Age={}", sticky.max_age_s));
        }
        before.push_str(&format!("; Path={}", sticky.path));
        if let Some(domain) = &sticky.domain {
            before.push_str(&format!("; Domain={domain}"));
        }
        let mut after = String::new();
        if sticky.http_only {
            after.push_str("; HttpOnly");
        }
        after.push_str(&format!("; SameSite={}", sticky.same_site.as_str()));
        Some(StickyCookie {
            name: name.as_str().into(),
            before_secure: before.into(),
            secure: sticky.secure,
            after_secure: after.into(),
        })
    }

    /// Whether the cookie is `Secure` only for a request that came over TLS
    /// (`secure: auto`): the caller then says which the request did.
    pub fn secure_follows_tls(&self) -> bool {
        self.secure == Secure::Auto
    }

    /// The `Set-Cookie` value that hands `id` to a client; `tls` is whether the
    /// request came over TLS (what `secure: auto` follows).
    pub fn header_value(&self, id: &StickyId, tls: bool) -> String {
        let secure = match self.secure {
            Secure::Always => true,
            Secure::Never => false,
            Secure::Auto => tls,
        };
        let mut value = String::with_capacity(self.name.len() + 1 + StickyId::LEN + 80);
        value.push_str(&self.name);
        value.push('=');
        value.push_str(id.as_str());
        value.push_str(&self.before_secure);
        if secure {
            value.push_str("; Secure");
        }
        value.push_str(&self.after_secure);
        value
    }
}

impl CompiledService {
    /// The sticky cookie of this service, when it has `sticky`.
    #[inline]
    pub fn sticky(&self) -> Option<&StickyCookie> {
        self.sticky.as_ref()
    }

    /// The user id the decision reads (`$migration_user_id`): through `user_key`,
    /// for a service whose decision uses one (`strategy: user` or user lists);
    /// None when the request carries none (an empty value counts as none).
    pub fn user_id_of<'r, R: RequestView>(&self, request: &'r R) -> Option<&'r [u8]> {
        if !self.needs_user_id() {
            return None;
        }
        self.user_id(request)
    }

    /// Whether this request must be given an id: the service has `sticky` and
    /// the request carries no (non-empty) id in its cookie.
    pub fn needs_sticky_id<R: RequestView>(&self, request: &R) -> bool {
        self.sticky.is_some() && self.user_id(request).is_none()
    }
}

/// The sticky cookie to hand this request an id through: its service (as
/// `choice` finds it) has `sticky` and the request carries no id. None for
/// every request of a configuration without `sticky`, at the cost of one test.
pub fn cookie_to_mint<'c, R: RequestView>(
    config: &'c CompiledConfig,
    choice: ServiceChoice<'_>,
    request: &R,
) -> Option<&'c StickyCookie> {
    if !config.any_sticky {
        return None;
    }
    let index = match choice {
        ServiceChoice::Auto => config.service_for_host(request.host())?,
        ServiceChoice::Named(name) => config.service_index(name)?,
        ServiceChoice::Index(index) => index,
    };
    let service = config.services.get(index as usize)?;
    service.sticky().filter(|_| service.needs_sticky_id(request))
}

/// A request seen as if it carried cookie `name` with value `value` (a minted
/// id): the decision of a client that gets an id is the decision of the same
/// client coming back with it.
pub struct WithUserCookie<'a, R> {
    pub request: &'a R,
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl<R: RequestView> RequestView for WithUserCookie<'_, R> {
    fn host(&self) -> &[u8] {
        self.request.host()
    }
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.request.headers()
    }
    #[inline]
    fn for_each_header_in<'a>(
        &'a self,
        slot_of: impl FnMut(&[u8]) -> Option<usize>,
        visit: impl FnMut(usize, &'a [u8]),
    ) {
        self.request.for_each_header_in(slot_of, visit)
    }
    fn header(&self, lowercase_name: &[u8]) -> Option<&[u8]> {
        self.request.header(lowercase_name)
    }
    fn cookie(&self, name: &[u8]) -> Option<&[u8]> {
        // Cookie names match case-insensitively, as `$cookie_NAME` reads them.
        if name.eq_ignore_ascii_case(self.name) {
            Some(self.value)
        } else {
            self.request.cookie(name)
        }
    }
    fn arg(&self, name: &[u8]) -> Option<&[u8]> {
        self.request.arg(name)
    }
    fn variable(&self, lowercase_name: &[u8]) -> Option<&[u8]> {
        self.request.variable(lowercase_name)
    }
    fn client_ip(&self) -> Option<IpAddr> {
        self.request.client_ip()
    }
    fn client_addr_text(&self) -> &[u8] {
        self.request.client_addr_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::OwnedRequest;
    use crate::{decide, load_str, Rule, Target};

    fn config(sticky: &str, extra: &str) -> CompiledConfig {
        let yaml = format!(
            "services:\n  - name: shop\n    old_host: shop.example\n    old_backend: old:80\n    new_host: shop.example\n    \
             new_backend: new:80\n    migration:\n      strategy: user\n      percentage: 30\n      user_key: cookie:mig_uid\n\
             {sticky}{extra}"
        );
        load_str("m.yaml", &yaml).unwrap()
    }

    const STICKY: &str = "      sticky: {}\n";
    const BETA: &str = "    canary:\n      header_rules:\n        - {header: X-Beta, value: \"on\", target: new}\n";

    fn id(n: u8) -> StickyId {
        StickyId::from_random(core::array::from_fn(|i| n.wrapping_mul(31).wrapping_add(i as u8 * 7)))
    }

    #[test]
    fn a_minted_id_decides_as_the_same_id_carried_back() {
        let config = config(STICKY, "");
        let mut new = 0;
        for n in 0..=255u8 {
            let id = id(n);
            let fresh = OwnedRequest::new("shop.example");
            let cookie = cookie_to_mint(&config, ServiceChoice::Auto, &fresh).expect("no id: one is minted");
            assert_eq!(&*cookie.name, "mig_uid");
            let minted = WithUserCookie { request: &fresh, name: cookie.name.as_bytes(), value: id.as_bytes() };
            let first = decide(&config, ServiceChoice::Auto, &minted, &mut || unreachable!("no weight draw"));
            let back =
                OwnedRequest::new("shop.example").header("Cookie", format!("theme=dark; mig_uid={}", id.as_str()));
            assert!(cookie_to_mint(&config, ServiceChoice::Auto, &back).is_none(), "an id carried: none minted");
            let again = decide(&config, ServiceChoice::Auto, &back, &mut || unreachable!("no weight draw"));
            assert_eq!(first, again, "id {id:?}");
            assert_eq!(first.rule, Rule::UserHash);
            new += usize::from(first.target == Some(Target::New));
        }
        // 256 ids at 30 %: far from both ends, whatever the ids are.
        assert!((40..=115).contains(&new), "{new} of 256 on new");
    }

    #[test]
    fn nothing_is_minted_without_sticky_or_for_another_host_or_an_id_carried() {
        let plain = config("", "");
        assert!(!plain.any_sticky);
        assert!(cookie_to_mint(&plain, ServiceChoice::Auto, &OwnedRequest::new("shop.example")).is_none());
        let config = config(STICKY, BETA);
        assert!(config.any_sticky);
        assert!(cookie_to_mint(&config, ServiceChoice::Auto, &OwnedRequest::new("other.example")).is_none());
        assert!(cookie_to_mint(&config, ServiceChoice::Index(7), &OwnedRequest::new("shop.example")).is_none());
        let empty = OwnedRequest::new("shop.example").header("Cookie", "mig_uid=");
        assert!(cookie_to_mint(&config, ServiceChoice::Auto, &empty).is_some(), "an empty id is none");
        // A header rule decides first; the client still gets its id.
        let beta = OwnedRequest::new("shop.example").header("X-Beta", "on");
        let cookie = cookie_to_mint(&config, ServiceChoice::Auto, &beta).expect("minted whatever decides");
        let one = id(1);
        let with = WithUserCookie { request: &beta, name: cookie.name.as_bytes(), value: one.as_bytes() };
        let d = decide(&config, ServiceChoice::Auto, &with, &mut || 0);
        assert_eq!((d.target, d.rule), (Some(Target::New), Rule::Header));
    }

    #[test]
    fn where_nothing_mints_a_request_without_an_id_is_drawn() {
        // explain, replay and the tests see a sticky service's request without
        // an id as nginx would decide it if the kernel gave no random bytes: by
        // the weight draw, never by the hash of some id made up for it.
        let config = config(STICKY, "");
        let fresh = OwnedRequest::new("shop.example");
        assert_eq!(fresh.sticky_id(), None);
        let d = decide(&config, ServiceChoice::Auto, &fresh, &mut || 0);
        assert_eq!((d.target, d.rule), (Some(Target::New), Rule::Weight));
        // A view that keeps the trait's own `sticky_id` (a request seen with
        // another cookie; the CLI's log lines) mints nothing either.
        let other = WithUserCookie { request: &fresh, name: b"theme", value: b"dark" };
        assert_eq!(other.sticky_id(), None);
        let d = decide(&config, ServiceChoice::Auto, &other, &mut || 0);
        assert_eq!((d.target, d.rule), (Some(Target::New), Rule::Weight));
    }

    #[test]
    fn a_request_seen_with_a_minted_cookie_keeps_its_headers() {
        let beta = OwnedRequest::new("shop.example").header("X-Beta", "on");
        let with = WithUserCookie { request: &beta, name: b"mig_uid", value: b"minted" };
        assert_eq!(with.header(b"x-beta"), Some(&b"on"[..]));
        assert_eq!(with.header(b"x-other"), None);
        assert_eq!(with.cookie(b"MIG_UID"), Some(&b"minted"[..]));
        // Its arguments too: a rule on `arg: NAME` reads them (explain, replay).
        let beta = OwnedRequest::new("shop.example").args("beta=on&x=1");
        let with = WithUserCookie { request: &beta, name: b"mig_uid", value: b"minted" };
        assert_eq!((with.arg(b"beta"), with.arg(b"other")), (Some(&b"on"[..]), None));
        // And its client address: ip rules and `strategy: ip` read it.
        let office = OwnedRequest::new("shop.example").client("10.1.2.3");
        let with = WithUserCookie { request: &office, name: b"mig_uid", value: b"minted" };
        assert_eq!(with.client_ip(), Some("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn a_test_request_can_carry_the_id_nginx_would_mint() {
        // explain and replay model nginx's minted id with `sticky_id`: the
        // split then hashes it as it hashes a cookie's.
        let mut minted = OwnedRequest::new("shop.example");
        minted.sticky_id = Some(b"minted-id".to_vec());
        assert_eq!(minted.sticky_id(), Some(&b"minted-id"[..]));
    }

    #[test]
    fn only_secure_auto_follows_the_request_s_tls() {
        let follows = |secure: &str| {
            let config = config(STICKY.replace("sticky: {}", &format!("sticky: {{secure: {secure}}}")).as_str(), "");
            config.services[0].sticky().expect("sticky").secure_follows_tls()
        };
        assert_eq!((follows("auto"), follows("true"), follows("false")), (true, false, false));
    }

    /// A request whose view mints `id` when the decision asks for one.
    struct Minting<'a> {
        request: &'a OwnedRequest,
        id: StickyId,
        asked: core::cell::Cell<u32>,
    }

    impl RequestView for Minting<'_> {
        fn host(&self) -> &[u8] {
            self.request.host()
        }
        fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
            self.request.headers()
        }
        fn cookie(&self, name: &[u8]) -> Option<&[u8]> {
            self.request.cookie(name)
        }
        fn arg(&self, name: &[u8]) -> Option<&[u8]> {
            self.request.arg(name)
        }
        fn sticky_id(&self) -> Option<&[u8]> {
            self.asked.set(self.asked.get() + 1);
            Some(self.id.as_bytes())
        }
        fn client_ip(&self) -> Option<IpAddr> {
            self.request.client_ip()
        }
        fn client_addr_text(&self) -> &[u8] {
            self.request.client_addr_text()
        }
    }

    #[test]
    fn an_id_minted_when_the_decision_asks_decides_as_carrying_it() {
        let config = config(STICKY, BETA);
        for n in 0..=63u8 {
            let fresh = OwnedRequest::new("shop.example");
            let view = Minting { request: &fresh, id: id(n), asked: Default::default() };
            let lazy = decide(&config, ServiceChoice::Auto, &view, &mut || 0);
            assert_eq!(view.asked.get(), 1, "asked once");
            let minted = id(n);
            let eager = WithUserCookie { request: &fresh, name: b"mig_uid", value: minted.as_bytes() };
            assert_eq!(lazy, decide(&config, ServiceChoice::Auto, &eager, &mut || 0));
        }
        // A header rule decides without reading the id; an id carried is never replaced.
        for request in [
            OwnedRequest::new("shop.example").header("X-Beta", "on"),
            OwnedRequest::new("shop.example").header("Cookie", "mig_uid=alice"),
        ] {
            let view = Minting { request: &request, id: id(1), asked: Default::default() };
            decide(&config, ServiceChoice::Auto, &view, &mut || 0);
            assert_eq!(view.asked.get(), 0);
        }
        // Without sticky nothing is asked.
        let plain = self::config("", "");
        let fresh = OwnedRequest::new("shop.example");
        let view = Minting { request: &fresh, id: id(1), asked: Default::default() };
        assert_eq!(decide(&plain, ServiceChoice::Auto, &view, &mut || 0).rule, Rule::Weight);
        assert_eq!(view.asked.get(), 0);
    }

    #[test]
    fn the_cookie_as_configured() {
        let id = id(3);
        let cookie = |sticky: &str, tls: bool| {
            let config = config(&format!("      sticky: {sticky}\n"), "");
            config.services[0].sticky().unwrap().header_value(&id, tls)
        };
        let id = id.as_str();
        assert_eq!(cookie("{}", false), format!("mig_uid={id}; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax"));
        assert_eq!(
            cookie("{}", true),
            format!("mig_uid={id}; Max-Age=2592000; Path=/; Secure; HttpOnly; SameSite=Lax")
        );
        assert_eq!(
            cookie("{secure: false}", true),
            format!("mig_uid={id}; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax")
        );
        assert_eq!(
            cookie(
                "{max_age: 0, path: /a, domain: example.com, secure: true, same_site: none, http_only: false}",
                false
            ),
            format!("mig_uid={id}; Path=/a; Domain=example.com; Secure; SameSite=None")
        );
    }

    #[test]
    fn the_user_id_a_decision_reads() {
        let config = config(STICKY, "");
        let s = &config.services[0];
        let carried = OwnedRequest::new("shop.example").header("Cookie", "mig_uid=alice");
        assert_eq!(s.user_id_of(&carried), Some(&b"alice"[..]));
        assert_eq!(s.user_id_of(&OwnedRequest::new("shop.example")), None);
        let weight = load_str(
            "m.yaml",
            "services:\n  - name: w\n    old_host: w.example\n    old_backend: o:80\n    new_host: w.example\n    new_backend: n:80\n",
        )
        .unwrap();
        let with_header = OwnedRequest::new("w.example").header("X-User-ID", "bob");
        assert_eq!(weight.services[0].user_id_of(&with_header), None, "strategy weight, no lists: no id is used");
    }

    #[test]
    fn ids_are_base64url_of_the_random_bytes() {
        // RFC 4648 test vectors, padded out to 16 bytes with zeros, checked
        // against Python's base64.urlsafe_b64encode.
        assert_eq!(StickyId::from_random([0; 16]).as_str(), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(StickyId::from_random([0xff; 16]).as_str(), "_____________________w");
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(b"foobar");
        assert_eq!(StickyId::from_random(b).as_str(), "Zm9vYmFyAAAAAAAAAAAAAA");
        let b: [u8; 16] = core::array::from_fn(|i| (i as u8).wrapping_mul(17).wrapping_add(3));
        assert_eq!(StickyId::from_random(b).as_str(), "AxQlNkdYaXqLnK2-z-DxAg");
        // The tests' failure messages (and any debug output) show the id's text.
        assert_eq!(format!("{:?}", StickyId::from_random(b)), "AxQlNkdYaXqLnK2-z-DxAg");
    }
}
