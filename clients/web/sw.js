// VideoConf service worker: the app shell works offline (and installs as an app); the API and
// signaling always go to the network.
const CACHE = "videoconf-shell-v2";
const SHELL = ["/", "/web/app.css", "/web/js/app.js", "/web/js/api.js", "/web/js/room.js", "/web/js/layout.js", "/web/js/quality.js", "/web/js/shortcuts.js", "/web/js/icons.js", "/web/js/sfu-client.js", "/web/js/ui.js", "/web/icon.svg", "/manifest.webmanifest"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys().then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k)))).then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  if (url.pathname.startsWith("/api/") || url.pathname === "/signaling" || url.pathname === "/metrics") return;
  // Network first, so a new version shows at once; the cached shell when offline.
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok && (SHELL.includes(url.pathname) || url.pathname.startsWith("/j/"))) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(url.pathname.startsWith("/j/") ? "/" : event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(url.pathname.startsWith("/j/") ? "/" : event.request)),
  );
});
