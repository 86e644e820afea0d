//! The browser consoles' static assets, embedded at compile time: the pages from `ui/static/`
//! as written, the bundles from `dist/` (built from `ui/src` by `ui/build.sh`, committed, so that
//! `cargo build` needs no Node). The dispatcher's web listener serves them next to the gRPC-Web
//! services; no CDN, nothing fetched elsewhere.

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// A bundle built by `ui/build.sh` (committed in `dist/`).
macro_rules! dist {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/", $file))
    };
}

/// A page or style sheet served as written (`ui/static/`).
macro_rules! page {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/static/", $file))
    };
}

/// Every path served, with its file.
pub const ASSETS: &[(&str, Asset)] = &[
    ("/", Asset { content_type: HTML, body: page!("index.html") }),
    ("/agent/", Asset { content_type: HTML, body: page!("agent.html") }),
    ("/planner/", Asset { content_type: HTML, body: page!("planner.html") }),
    ("/assets/console.css", Asset { content_type: CSS, body: page!("console.css") }),
    ("/assets/agent.js", Asset { content_type: JS, body: dist!("agent.js") }),
    ("/assets/planner.js", Asset { content_type: JS, body: dist!("planner.js") }),
    ("/assets/planner.css", Asset { content_type: CSS, body: dist!("planner.css") }),
];

/// The asset at `path`: a page's path may leave out its final slash (`/agent` is `/agent/`).
pub fn asset(path: &str) -> Option<Asset> {
    let find = |p: &str| ASSETS.iter().find(|(at, _)| *at == p).map(|(_, a)| *a);
    find(path).or_else(|| if path.ends_with('/') { None } else { find(&format!("{path}/")) })
}

/// Whether `path` names a page or asset (every other path is the gRPC-Web services').
pub fn serves(path: &str) -> bool {
    asset(path).is_some()
}

/// Headers every asset is served with: no caching across builds, no sniffing, no framing, and a
/// content security policy that allows only this origin (scripts, styles, calls).
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("cache-control", "no-cache"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_asset_is_found_and_nothing_else() {
        for (path, a) in ASSETS {
            assert_eq!(asset(path), Some(*a));
            assert!(!a.body.is_empty(), "{path} is empty: run crates/dispatch-web/ui/build.sh");
        }
        assert_eq!(asset("/agent"), asset("/agent/"));
        assert_eq!(asset("/planner"), asset("/planner/"));
        assert_eq!(asset("/dispatch.v1.AgentService/OpenSession"), None);
        assert_eq!(asset("/assets/"), None);
        assert_eq!(asset("/assets/../Cargo.toml"), None);
    }

    #[test]
    fn pages_load_only_their_own_scripts_from_this_origin() {
        for page in ["/agent/", "/planner/"] {
            let html = std::str::from_utf8(asset(page).unwrap().body).unwrap();
            assert!(!html.contains("http://") && !html.contains("https://"), "{page} loads from elsewhere");
            for src in html.split("src=\"").skip(1).chain(html.split("href=\"").skip(1)) {
                let target = &src[..src.find('"').unwrap()];
                if target.starts_with("data:") {
                    continue; // inline (the empty favicon)
                }
                assert!(serves(target), "{page} refers to {target}, which is not served");
            }
        }
    }
}
