//! The routing table: which app a host selects, and which function a method and
//! path reach within an app. Built whole for each deployment and swapped in
//! atomically, so no request ever sees half an app.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use nimbus_core::app::App;
use nimbus_core::meter::{AppMeters, FunctionMeter, RouteMeter};
use nimbus_core::ports::Target;

/// One app's routes.
pub struct AppRoutes {
    pub name: Arc<str>,
    /// The app's meters: requests and bytes sent.
    pub meters: Arc<AppMeters>,
    router: matchit::Router<PathRoutes>,
    /// Public buckets, longest mount first.
    pub public_buckets: Vec<PublicBucket>,
}

/// Per path: the length of its static prefix (before any `{`), and its targets
/// (`None`: any method).
type PathRoutes = (usize, Vec<(Option<http::Method>, Routed)>);

/// Where a route leads, with the meters its requests are counted in.
pub struct Routed {
    pub target: Target,
    pub meter: Arc<RouteMeter>,
    pub function: Arc<FunctionMeter>,
}

/// A bucket served read-only at a gateway path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicBucket {
    pub bucket: String,
    /// `/` or a path without a trailing slash.
    pub mount: String,
    pub index_document: String,
}

impl PublicBucket {
    /// The object key a request path names in this bucket, if the path is under
    /// its mount. A path ending in `/` (or the mount itself) names the index document.
    pub fn key_for(&self, path: &str) -> Option<String> {
        let rest = if self.mount == "/" {
            path.strip_prefix('/')?
        } else {
            let rest = path.strip_prefix(self.mount.as_str())?;
            if rest.is_empty() {
                ""
            } else {
                rest.strip_prefix('/')?
            }
        };
        let decoded = percent_encoding::percent_decode_str(rest)
            .decode_utf8()
            .ok()?
            .into_owned();
        if decoded.is_empty() || decoded.ends_with('/') {
            Some(format!("{decoded}{}", self.index_document))
        } else {
            Some(decoded)
        }
    }
}

/// What a path lookup found.
pub enum Match<'a> {
    Found {
        route: &'a Routed,
        params: Vec<(String, String)>,
    },
    /// The path exists but not for this method; the methods it has.
    MethodNotAllowed(Vec<String>),
    NotFound,
}

impl AppRoutes {
    pub fn new(app: &App, deployment: u64, meters: Arc<AppMeters>) -> Self {
        let name: Arc<str> = app.name.as_str().into();
        let mut by_path: HashMap<&str, Vec<(Option<http::Method>, Routed)>> = HashMap::new();
        for route in &app.routes {
            let method = route
                .method
                .as_deref()
                .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
            let label = format!("{} {}", route.method.as_deref().unwrap_or("*"), route.path);
            by_path.entry(&route.path).or_default().push((
                method,
                Routed {
                    target: Target {
                        app: name.clone(),
                        function: route.function.as_str().into(),
                        deployment,
                    },
                    meter: meters.route(&label),
                    function: meters.function(&route.function),
                },
            ));
        }
        let mut router = matchit::Router::new();
        for (path, mut targets) in by_path {
            // Specific methods before the `*` route of the same path.
            targets.sort_by_key(|(m, _)| m.is_none());
            // The manifest was validated: paths are well-formed and conflict-free.
            let static_len = path.find('{').unwrap_or(path.len());
            if let Err(err) = router.insert(path, (static_len, targets)) {
                tracing::error!(app = %name, "route `{path}` skipped: {err}");
            }
        }
        let mut public_buckets: Vec<PublicBucket> = app
            .buckets
            .iter()
            .filter(|(_, b)| b.public)
            .map(|(bucket, b)| PublicBucket {
                bucket: bucket.clone(),
                mount: b.mount.clone(),
                index_document: b.index_document.clone(),
            })
            .collect();
        public_buckets.sort_by_key(|b| std::cmp::Reverse(b.mount.len()));
        Self {
            name,
            meters,
            router,
            public_buckets,
        }
    }

    /// The public bucket and object key a GET or HEAD of `path` reads, if a
    /// bucket's mount is the most specific match: a route wins when its static
    /// prefix is at least as long as the mount (`/api/{id}` over a bucket at `/`),
    /// a bucket when its mount is longer (`/site` over a route `/{*path}`).
    pub fn public_object(
        &self,
        method: &http::Method,
        path: &str,
    ) -> Option<(&PublicBucket, String)> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return None;
        }
        let (bucket, key) = self
            .public_buckets
            .iter()
            .find_map(|b| b.key_for(path).map(|key| (b, key)))?;
        let route_wins = self.router.at(path).is_ok_and(|m| {
            m.value.0 >= bucket.mount.len()
                && m.value
                    .1
                    .iter()
                    .any(|(x, _)| x.as_ref().is_none_or(|x| x == method))
        });
        (!route_wins).then_some((bucket, key))
    }

    pub fn lookup(&self, method: &http::Method, path: &str) -> Match<'_> {
        let Ok(matched) = self.router.at(path) else {
            return Match::NotFound;
        };
        let found = matched
            .value
            .1
            .iter()
            .find(|(m, _)| m.as_ref().is_none_or(|m| m == method));
        match found {
            Some((_, route)) => Match::Found {
                route,
                params: matched
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            None => {
                let allowed: BTreeSet<String> = matched
                    .value
                    .1
                    .iter()
                    .filter_map(|(m, _)| m.as_ref().map(|m| m.to_string()))
                    .collect();
                Match::MethodNotAllowed(allowed.into_iter().collect())
            }
        }
    }
}

/// Every app's routes and the host names that select them.
#[derive(Default)]
pub struct Table {
    pub apps: HashMap<Arc<str>, Arc<AppRoutes>>,
    pub hosts: HashMap<String, Arc<str>>,
    pub default_app: Option<Arc<str>>,
}

impl Table {
    /// A copy of the table without `app`'s routes and host names.
    pub fn without(&self, app: &str) -> Self {
        let mut apps = self.apps.clone();
        apps.retain(|name, _| &**name != app);
        let mut hosts = self.hosts.clone();
        hosts.retain(|_, name| &**name != app);
        Self {
            apps,
            hosts,
            default_app: self.default_app.clone(),
        }
    }

    /// The app for a request's `Host` (port ignored); otherwise the default app,
    /// or the only app when there is just one.
    pub fn select(&self, host: Option<&str>) -> Option<&Arc<AppRoutes>> {
        if let Some(host) = host {
            let bare = host
                .rsplit_once(':')
                .map_or(host, |(h, _)| h)
                .to_ascii_lowercase();
            if let Some(app) = self.hosts.get(&bare) {
                return self.apps.get(app);
            }
        }
        if let Some(default) = &self.default_app {
            return self.apps.get(default);
        }
        if self.apps.len() == 1 {
            return self.apps.values().next();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_bucket_paths() {
        let site = PublicBucket {
            bucket: "site".into(),
            mount: "/".into(),
            index_document: "index.html".into(),
        };
        assert_eq!(site.key_for("/").as_deref(), Some("index.html"));
        assert_eq!(site.key_for("/docs/").as_deref(), Some("docs/index.html"));
        assert_eq!(site.key_for("/a%20b.css").as_deref(), Some("a b.css"));
        let img = PublicBucket {
            mount: "/img".into(),
            ..site
        };
        assert_eq!(img.key_for("/img/x.png").as_deref(), Some("x.png"));
        assert_eq!(img.key_for("/img").as_deref(), Some("index.html"));
        assert_eq!(img.key_for("/imgx/y"), None);
        assert_eq!(img.key_for("/other"), None);
    }
    use nimbus_core::manifest::Manifest;

    fn app(name: &str) -> App {
        let text = format!(
            "[app]\nname = \"{name}\"\nhosts = [\"{name}.example.com\"]\n[functions.f]\nsource = \"f.wasm\"\n\
             [[routes]]\nmethod = \"GET\"\npath = \"/items/{{id}}\"\nfunction = \"f\"\n\
             [[routes]]\nmethod = \"PUT\"\npath = \"/items/{{id}}\"\nfunction = \"f\"\n\
             [[routes]]\npath = \"/files/{{*rest}}\"\nfunction = \"f\"\n"
        );
        Manifest::parse("nimbus.toml", &text).unwrap().app
    }

    #[test]
    fn matches_params_wildcards_and_methods() {
        let routes = AppRoutes::new(&app("a"), 1, Default::default());
        match routes.lookup(&http::Method::GET, "/items/42") {
            Match::Found { route, params } => {
                assert_eq!(&*route.target.function, "f");
                assert_eq!(params, vec![("id".to_string(), "42".to_string())]);
            }
            _ => panic!("expected a match"),
        }
        match routes.lookup(&http::Method::DELETE, "/items/42") {
            Match::MethodNotAllowed(allowed) => assert_eq!(allowed, ["GET", "PUT"]),
            _ => panic!("expected 405"),
        }
        match routes.lookup(&http::Method::POST, "/files/a/b.txt") {
            Match::Found { params, .. } => assert_eq!(params[0].1, "a/b.txt"),
            _ => panic!("expected a wildcard match"),
        }
        assert!(matches!(
            routes.lookup(&http::Method::GET, "/nope"),
            Match::NotFound
        ));
    }

    #[test]
    fn selects_apps_by_host() {
        let mut table = Table::default();
        for name in ["a", "b"] {
            let app = app(name);
            let routes = Arc::new(AppRoutes::new(&app, 1, Default::default()));
            for host in app.all_hosts() {
                table.hosts.insert(host, routes.name.clone());
            }
            table.apps.insert(routes.name.clone(), routes);
        }
        assert_eq!(&*table.select(Some("b.localhost:8080")).unwrap().name, "b");
        assert_eq!(&*table.select(Some("A.example.com")).unwrap().name, "a");
        assert!(
            table.select(Some("other")).is_none(),
            "two apps and no default"
        );
        table.default_app = Some("a".into());
        assert_eq!(&*table.select(None).unwrap().name, "a");
    }
}
