//! The dashboard's one page: report.html's style sheet and palette, an
//! inline script that draws from the event stream. Self-contained: no
//! external resource, so it works with no network beyond the coordinator.

use crate::chart::PALETTE;
use crate::html::{CSS, HOST_CHARTS_MAX};

/// What the page adds to report.html's style.
const EXTRA_CSS: &str = r#"
#state{margin-top:6px;color:#fff;font-weight:600}
.pstate{font-size:13px;font-weight:400;color:#555;margin-left:8px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
tr.final td{font-weight:600}
#end{background:#fff;border:1px solid #dfe3e8;border-radius:6px;padding:4px 16px;margin:18px 0}
"#;

/// The script, after the constants it shares with report.html.
const SCRIPT: &str = include_str!("live.js");

/// The page's Content-Security-Policy: only its own inline style and
/// script, and the event stream from the same origin.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'";

/// The page. It carries no data: everything comes from the stream.
pub fn render() -> String {
    let palette: Vec<String> = PALETTE.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"referrer\" content=\"no-referrer\"><title>cwbench live</title><style>{CSS}{EXTRA_CSS}</style></head><body>\
<header><h1 id=\"title\">cwbench live</h1><p id=\"facts\"></p><p id=\"state\">connecting…</p></header>\
<main><div id=\"end\" hidden></div><div id=\"profiles\"></div>\
<noscript><p>This page draws the run as it happens with a small inline script; without it, wait for report.html.</p></noscript></main>\
<footer>Served by the cwbench coordinator {version} during the run. Self-contained: no external resources; updates by Server-Sent Events.</footer>\
<script>const PALETTE=[{palette}];const HOST_LINES_MAX={HOST_CHARTS_MAX};\n{SCRIPT}</script></body></html>\n",
        version = cwbench::VERSION,
        palette = palette.join(","),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page fetches nothing but its own stream: no src or href to
    /// another origin, and it shares report.html's style sheet.
    #[test]
    fn the_page_is_self_contained() {
        let p = render().replace("http://www.w3.org/2000/svg", "");
        assert!(p.contains(CSS));
        assert!(p.contains("new EventSource(\"events\")"));
        assert!(!p.contains("src="), "no external script or image");
        assert!(!p.contains("http://") && !p.contains("https://"));
        assert!(p.contains("#4e79a7"));
    }
}
