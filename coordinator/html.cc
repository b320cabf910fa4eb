#include "coordinator/html.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace forge::coordinator::html {
namespace {

// The whole stylesheet. Light, quiet colours; state is carried by a few saturated badges.
constexpr char kCss[] = R"css(
:root{--bg:#f5f6f8;--card:#fff;--ink:#1f2430;--muted:#6b7280;--line:#e3e6ea;--accent:#2563eb;
--ok:#15803d;--okbg:#dcfce7;--run:#1d4ed8;--runbg:#dbeafe;--warn:#b45309;--warnbg:#fef3c7;
--bad:#b91c1c;--badbg:#fee2e2;--mutedbg:#eef0f3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header{background:#111827;color:#e5e7eb;display:flex;align-items:center;gap:22px;padding:0 24px;height:48px}
header .brand{font-weight:700;letter-spacing:.02em;color:#fff;font-size:16px}
header nav a{color:#cbd5e1;padding:14px 2px;border-bottom:2px solid transparent}
header nav a.on{color:#fff;border-bottom-color:#60a5fa}
header nav{display:flex;gap:18px}
header .who{margin-left:auto;display:flex;gap:12px;align-items:center;color:#9ca3af;font-size:13px}
header .who button{background:none;border:1px solid #374151;color:#d1d5db;border-radius:6px;padding:3px 10px;cursor:pointer}
main{max-width:1280px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:20px;margin:4px 0 14px}h2{font-size:15px;margin:0 0 10px}
.sub{color:var(--muted);font-size:13px}
.grid{display:grid;gap:16px;grid-template-columns:repeat(auto-fill,minmax(560px,1fr))}
.cards{display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));margin-bottom:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin-bottom:16px}
.stat{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.stat .v{font-size:24px;font-weight:650}.stat .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.03em;border-bottom:1px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:top}
tr:last-child td{border-bottom:none}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.badge{display:inline-block;border-radius:999px;padding:1px 9px;font-size:12px;font-weight:600}
.badge-ok{color:var(--ok);background:var(--okbg)}.badge-run{color:var(--run);background:var(--runbg)}
.badge-warn{color:var(--warn);background:var(--warnbg)}.badge-bad{color:var(--bad);background:var(--badbg)}
.badge-muted{color:var(--muted);background:var(--mutedbg)}
.bar{height:8px;background:var(--mutedbg);border-radius:99px;overflow:hidden;min-width:90px}
.bar>span{display:block;height:100%;background:var(--accent)}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}.kv dt{color:var(--muted)}.kv dd{margin:0}
pre.log{background:#0f172a;color:#e2e8f0;padding:12px;border-radius:8px;overflow:auto;max-height:420px;font-size:12px;margin:0}
.msg{color:var(--muted);font-size:13px}.err{color:var(--bad)}
.verdict{border-radius:8px;padding:10px 12px;margin-top:10px}.verdict.pass{background:var(--okbg)}.verdict.block{background:var(--badbg)}
form.login{max-width:420px;margin:80px auto}form.login input{width:100%;padding:9px 10px;border:1px solid var(--line);border-radius:8px;font:inherit;margin:8px 0 12px}
form.login button{background:var(--accent);color:#fff;border:0;border-radius:8px;padding:9px 16px;font:inherit;cursor:pointer}
.filters a{margin-right:10px}.filters a.on{font-weight:700;color:var(--ink)}
svg.forge-chart{width:100%;height:auto;display:block}
footer{color:var(--muted);font-size:12px;text-align:center;padding:12px}
)css";

// Refreshes <main> in place every 5 s while the tab is visible; without JavaScript the page
// is static and the "refresh" link in the footer reloads it.
constexpr char kLiveScript[] = R"js(
(function(){var busy=false;function tick(){if(document.hidden||busy)return;
var sel=window.getSelection();if(sel&&!sel.isCollapsed)return;busy=true;
fetch(location.href,{credentials:'same-origin',headers:{'X-Forge-Live':'1'}}).then(function(r){
if(r.redirected||!r.ok)return null;return r.text();}).then(function(t){if(!t)return;
var d=new DOMParser().parseFromString(t,'text/html');var m=d.querySelector('main');if(!m)return;
var y=window.scrollY,keep={};document.querySelectorAll('main [id]').forEach(function(e){
if(e.scrollTop>0||e.scrollHeight>e.clientHeight)keep[e.id]=[e.scrollTop,
e.scrollTop+e.clientHeight>=e.scrollHeight-4];});
document.querySelector('main').replaceWith(m);window.scrollTo(0,y);
Object.keys(keep).forEach(function(id){var e=document.getElementById(id);if(!e)return;
e.scrollTop=keep[id][1]?e.scrollHeight:keep[id][0];});
}).catch(function(){}).finally(function(){busy=false;});}setInterval(tick,5000);})();
)js";

}  // namespace

std::string Escape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      case '\t':
      case '\n':
      case '\r':
        out += c;
        break;
      default:
        // Other control characters are invalid in HTML and XML even as references.
        out += static_cast<unsigned char>(c) < 0x20 ? ' ' : c;
    }
  }
  return out;
}

std::string UrlEncode(absl::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

std::string Page(const PageOptions& o, absl::string_view body) {
  std::string nav;
  if (!o.who.empty()) {
    auto item = [&](absl::string_view key, absl::string_view href, absl::string_view label) {
      absl::StrAppend(&nav, "<a href=\"", href, "\"", o.active == key ? " class=\"on\"" : "", ">",
                      label, "</a>");
    };
    item("overview", "/", "Overview");
    item("jobs", "/jobs", "Jobs");
    if (o.show_fleet) item("workers", "/workers", "Workers");
    item("schedules", "/schedules", "Schedules");
  }
  std::string who;
  if (!o.who.empty()) {
    who = absl::StrCat("<div class=\"who\"><span>", Escape(o.who),
                       "</span><form method=\"post\" action=\"/logout\"><button "
                       "type=\"submit\">Sign out</button></form></div>");
  }
  return absl::StrCat(
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
      "<title>",
      Escape(o.title), " · Forge</title><style>", kCss, "</style></head><body><header>",
      "<span class=\"brand\">Forge</span><nav>", nav, "</nav>", who, "</header><main>", body,
      "</main><footer>forge-coordinator · <a href=\"\">refresh</a></footer>",
      o.live ? "<script src=\"/static/live.js\" defer></script>" : "", "</body></html>");
}

absl::string_view LiveScript() { return kLiveScript; }

std::string Count(double v) {
  const double a = std::fabs(v);
  if (a >= 1e9) return absl::StrFormat("%.1fG", v / 1e9);
  if (a >= 1e6) return absl::StrFormat("%.1fM", v / 1e6);
  if (a >= 1e4) return absl::StrFormat("%.1fk", v / 1e3);
  return absl::StrFormat("%.0f", v);
}

std::string Bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.1f %s", v, units[u]);
}

std::string Duration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  const int64_t s = absl::ToInt64Seconds(d);
  if (s < 60) return absl::StrCat(s, " s");
  if (s < 3600) return absl::StrFormat("%d min %02d s", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh %02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd %02dh", s / 86400, (s % 86400) / 3600);
}

std::string Ago(absl::Time then, absl::Time now) {
  if (then == absl::UnixEpoch() || then == absl::InfinitePast()) return "—";
  return absl::StrCat("<time datetime=\"",
                      absl::FormatTime(absl::RFC3339_sec, then, absl::UTCTimeZone()), "\" title=\"",
                      absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", then, absl::UTCTimeZone()), "\">",
                      Duration(now - then), " ago</time>");
}

std::string Num(double v, int digits) {
  if (!std::isfinite(v)) return std::isnan(v) ? "NaN" : (v > 0 ? "∞" : "−∞");
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*g", digits, v);
  return buf;
}

std::string Badge(absl::string_view kind, absl::string_view text) {
  return absl::StrCat("<span class=\"badge badge-", kind, "\">", Escape(text), "</span>");
}

}  // namespace forge::coordinator::html
