//! The headers SockJS answers carry: CORS (the page's origin echoed, with
//! credentials, so that `JSESSIONID` can fly), no caching for session
//! requests, one-year caching for preflights and the iframe page, and the
//! optional `JSESSIONID` cookie.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue};

use crate::admission;
use crate::settings::EdgeSettings;

/// What session requests carry: nothing may be cached (iOS 6 even caches
/// POSTs).
const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
/// A year, in seconds: how long preflights and the iframe page are cached.
const YEAR_SECONDS: u64 = 31_536_000;

/// `Access-Control-Allow-*` for a request with `request`'s headers: the
/// page's `Origin` echoed with credentials allowed (`*` without an
/// `Origin`), and the headers it asked for. Nothing for an origin
/// `allowed_origins` refuses: the browser then keeps the answer from the
/// page.
pub(super) fn cors(settings: &EdgeSettings, request: &HeaderMap, out: &mut HeaderMap) {
    match request.get(header::ORIGIN) {
        Some(origin) => {
            let allowed = origin
                .to_str()
                .is_ok_and(|text| admission::origin_allowed(settings, Some(text)));
            if !allowed {
                return;
            }
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            out.append(header::VARY, HeaderValue::from_static("origin"));
        }
        None => {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    if let Some(asked) = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|value| !value.is_empty())
    {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
}

/// `Cache-Control` for a session request or `/info`.
pub(super) fn no_cache(out: &mut HeaderMap) {
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
}

/// `Cache-Control` and `Expires` a year ahead.
pub(super) fn cache_for_a_year(out: &mut HeaderMap) {
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    let expires = SystemTime::now() + Duration::from_secs(YEAR_SECONDS);
    if let Ok(value) = HeaderValue::from_str(&http_date(expires)) {
        out.insert(header::EXPIRES, value);
    }
}

/// The answer to a preflight of a route whose methods are `methods`.
pub(super) fn preflight(out: &mut HeaderMap, methods: &'static str) {
    cache_for_a_year(out);
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("31536000"),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
}

/// `Set-Cookie: JSESSIONID=…; path=/` when the endpoint asks for cookies:
/// the client's own value echoed, else `dummy` (load balancers that stick
/// sessions by this cookie only need it present).
pub(super) fn session_cookie(request: &HeaderMap, out: &mut HeaderMap) {
    let sent = request
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "JSESSIONID")
        .map(|(_, value)| value);
    let value = format!("JSESSIONID={}; path=/", sent.unwrap_or("dummy"));
    if let Ok(value) = HeaderValue::from_str(&value) {
        out.insert(header::SET_COOKIE, value);
    }
}

/// `time` as an HTTP date (RFC 9110 IMF-fixdate), e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm), for days after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdates() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(http_date(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn the_session_cookie_echoes_the_clients() {
        let mut request = HeaderMap::new();
        let mut out = HeaderMap::new();
        session_cookie(&request, &mut out);
        assert_eq!(out[header::SET_COOKIE], "JSESSIONID=dummy; path=/");
        request.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; JSESSIONID=abcdef"),
        );
        session_cookie(&request, &mut out);
        assert_eq!(out[header::SET_COOKIE], "JSESSIONID=abcdef; path=/");
    }
}
