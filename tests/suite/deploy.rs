//! What ships for deployment works as shipped: the kustomize base and its example overlay render
//! with `kubectl kustomize`, validate with `kubernetes-validate --strict` (Kubernetes 1.30 and
//! the newest schema it has), and hold what Kubernetes would otherwise find only at run time;
//! every Envoy file passes `envoy --mode validate`; the sidecar reads its keys as the manifest's
//! unprivileged user with the manifest's file modes.

use std::process::Command;

use crate::support::kustomize::{find, render};
use crate::support::python::python_tool;
use crate::support::{TempDir, repo};
use serde_json::Value;

const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod[list].as_array().into_iter().flatten())
        .collect()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The file a ConfigMap mounted by `container` at `mount_path` holds under `key`.
fn configmap_file<'a>(docs: &'a [Value], pod: &Value, volume: &str, key: &str) -> &'a str {
    let configmap = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume)
        .and_then(|v| v["configMap"]["name"].as_str())
        .unwrap_or_else(|| panic!("volume {volume} is not a ConfigMap"));
    find(docs, "ConfigMap", configmap)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{configmap} has no {key}"))
}

/// Whether `path` lies under one of `container`'s mounts.
fn mounted(container: &Value, path: &str) -> bool {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|mount| path.starts_with(mount))
        })
}

/// The file after `flag` in `container`'s arguments lies on one of its mounts.
fn assert_file_argument_mounted(container: &Value, flag: &str) {
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let file = args
        .iter()
        .position(|arg| *arg == flag)
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("{}: no {flag} argument", container["name"]));
    assert!(mounted(container, file), "{file} is not mounted");
}

/// A named container port's number.
fn port_number(container: &Value, port: &Value) -> u64 {
    port.as_u64().unwrap_or_else(|| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *port)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no port {port}"))
    })
}

/// What a rendered pod needs at run time: `deployment` is the EvidentSource Deployment the
/// token-vending component was applied to, `backend` its own container.
fn check_rendered(docs: &[Value], deployment: &str, backend: &str) {
    let deployment = find(docs, "Deployment", deployment);
    let pod = &deployment["spec"]["template"]["spec"];

    // The sidecar is a native sidecar with a startup probe, and its probes reach a listener
    // that binds beyond loopback.
    let sidecar = container(pod, "token-vending");
    assert!(
        pod["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "token-vending")
    );
    assert_eq!(sidecar["restartPolicy"], "Always", "native sidecar");
    assert!(sidecar["startupProbe"].is_object(), "startupProbe");
    let config: Value =
        serde_norway::from_str(configmap_file(docs, pod, "evs-config", "config.yaml")).unwrap();
    assert_file_argument_mounted(sidecar, "--config");
    // The rollout gate: `check-config` runs first, on the config the sidecar will read, with
    // every volume the sidecar reads its files from.
    let gate = &pod["initContainers"][0];
    assert_eq!(
        gate["name"], "check-config",
        "check-config runs before the sidecar"
    );
    assert_eq!(gate["args"][0], "check-config");
    assert_eq!(gate["args"][2], sidecar["args"][2], "the same config file");
    assert_file_argument_mounted(gate, "--config");
    for mount in sidecar["volumeMounts"].as_array().unwrap() {
        if mount["readOnly"] == true {
            assert!(
                gate["volumeMounts"].as_array().unwrap().contains(mount),
                "check-config lacks {mount}"
            );
        }
    }
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let port = port_number(sidecar, &sidecar[probe]["httpGet"]["port"]);
        let listener = ["admin", "http"]
            .iter()
            .filter_map(|l| config["listen"][l].as_str())
            .find(|addr| addr.ends_with(&format!(":{port}")))
            .unwrap_or_else(|| panic!("{probe} port {port} is no listener of the config"));
        assert!(
            !listener.starts_with("127."),
            "{probe}: {listener} is loopback only"
        );
        let path = sidecar[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(
            ["/readyz", "/healthz"].contains(&path),
            "{probe} path {path}"
        );
    }
    // Every file the sidecar's config names is mounted.
    for file in [
        config["signing"]["keys_dir"].as_str(),
        config["grants"]["file"].as_str(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            mounted(sidecar, file),
            "{file} is not mounted into the sidecar"
        );
    }

    // Envoy's config is mounted, starts without files it does not have, and its readiness
    // probe reaches a listener beyond loopback.
    let envoy = container(pod, "envoy");
    assert_file_argument_mounted(envoy, "-c");
    let envoy_yaml = configmap_file(docs, pod, "evs-envoy-config", "envoy.yaml");
    assert!(
        !envoy_yaml.contains("filename:"),
        "Envoy's config needs files it is not given"
    );
    let envoy_config: Value = serde_norway::from_str(envoy_yaml).unwrap();
    let ready_port = port_number(envoy, &envoy["readinessProbe"]["httpGet"]["port"]);
    let reachable = envoy_config["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| {
            let address = &l["address"]["socket_address"];
            address["port_value"].as_u64() == Some(ready_port) && address["address"] != "127.0.0.1"
        });
    assert!(
        reachable,
        "Envoy's readiness port {ready_port} is not a listener beyond loopback"
    );
    // Envoy calls the sidecar where it listens: the same Unix socket, on a volume both mount,
    // or the same TCP port.
    let authz = config["listen"]["authz"].as_str().unwrap();
    match authz.strip_prefix("unix:") {
        Some(socket) => {
            assert!(
                envoy_yaml.contains(&format!("pipe: {{ path: {socket} }}")),
                "Envoy's ext_authz cluster does not dial {socket}"
            );
            let shared = |c: &Value| {
                c["volumeMounts"].as_array().unwrap().iter().find_map(|m| {
                    let mount = m["mountPath"].as_str()?;
                    socket.starts_with(mount).then(|| m["name"].clone())
                })
            };
            let volume = shared(sidecar).expect("the socket's folder is mounted in the sidecar");
            assert_eq!(
                shared(envoy),
                Some(volume.clone()),
                "Envoy mounts the socket's volume"
            );
            let emptydir = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == volume)
                .unwrap();
            assert!(
                emptydir["emptyDir"].is_object(),
                "the socket lives on an emptyDir"
            );
        }
        None => {
            let port = authz.rsplit(':').next().unwrap();
            assert!(envoy_yaml.contains(&format!("port_value: {port}")));
        }
    }

    // The restricted Pod Security Standard, resources and pinned images on every container.
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
    for c in containers(pod) {
        let name = &c["name"];
        let context = &c["securityContext"];
        assert_eq!(context["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            context["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert_ne!(context["runAsUser"], 0, "{name}");
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "{name}: memory request"
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{name}: memory limit"
        );
        let image = c["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{name}: {image} is not pinned"
        );
    }
    for volume in pod["volumes"].as_array().unwrap() {
        assert!(volume["hostPath"].is_null(), "hostPath volume");
    }

    // The sidecar's user can read the keys Secret: by mode for others, or by group through
    // fsGroup.
    let keys = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "evs-keys")
        .unwrap();
    let mode = keys["secret"]["defaultMode"].as_u64().unwrap_or(0o644);
    let group_reads = mode & 0o040 != 0 && security["fsGroup"].is_u64();
    assert!(
        mode & 0o004 != 0 || group_reads,
        "mode {mode:o}: the sidecar cannot read its keys"
    );
    assert_eq!(mode & 0o004, 0, "keys readable by every user");

    // Services publish what needs publishing; the monitor scrapes the admin port.
    let jwks = find(docs, "Service", "evs-token-vending");
    assert!(
        jwks["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["targetPort"] == "jwks")
    );
    // The ServiceMonitor comes with the prometheus-operator component, where it is used.
    if let Some(monitor) = docs.iter().find(|d| d["kind"] == "ServiceMonitor") {
        for (label, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                &jwks["metadata"]["labels"][label], value,
                "the monitor selects {label}"
            );
        }
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
        assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    }
    // The JWKS Service selects the pods the sidecar was added to.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (label, value) in jwks["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &pod_labels[label], value,
            "the JWKS Service selects {label}"
        );
    }
    // Callers reach EvidentSource through Envoy only: every Service selecting the pods
    // targets Envoy's port.
    let envoy_grpc = port_number(envoy, &Value::from("evs-grpc"));
    for service in docs.iter().filter(|d| d["kind"] == "Service") {
        let selects = service["spec"]["selector"]
            .as_object()
            .unwrap()
            .iter()
            .all(|(label, value)| &pod_labels[label] == value);
        if !selects || service["metadata"]["name"] == "evs-token-vending" {
            continue;
        }
        for port in service["spec"]["ports"].as_array().unwrap() {
            assert_eq!(
                port_number(envoy, &port["targetPort"]),
                envoy_grpc,
                "Service {} bypasses Envoy",
                service["metadata"]["name"]
            );
        }
    }
    // EvidentSource expects the issuer the sidecar mints as.
    let backend = container(pod, backend);
    let expected_issuer = backend["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "EVS_JWT_ISSUER")
        .unwrap();
    assert_eq!(expected_issuer["value"], config["token"]["issuer"]);
}

/// The base's own PodDisruptionBudget and NetworkPolicy.
fn check_base_policies(docs: &[Value]) {
    let pod = &find(docs, "Deployment", "evidentsource")["spec"]["template"]["spec"];
    let config: Value =
        serde_norway::from_str(configmap_file(docs, pod, "evs-config", "config.yaml")).unwrap();
    find(docs, "PodDisruptionBudget", "evidentsource");
    let policy = find(docs, "NetworkPolicy", "evidentsource");
    let open: Vec<u64> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["from"].is_null())
        .flat_map(|rule| {
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["port"].as_u64())
        })
        .collect();
    let admin_port: u64 = config["listen"]["admin"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(!open.contains(&admin_port), "metrics open to everyone");
    assert!(open.contains(&10000) && open.contains(&9002), "{open:?}");
}

fn kubernetes_validate(docs: &[Value]) {
    let tool = python_tool(KUBERNETES_VALIDATE, |venv| {
        Some(venv.join("bin/kubernetes-validate")).filter(|p| p.is_file())
    });
    let dir = TempDir::new("kubernetes-validate");
    // CRDs (the Prometheus Operator's, Istio's, Gateway API's and Envoy Gateway's) have no
    // schema there; they are checked by hand in these tests and in tests/dashboards.rs.
    let custom = [
        "monitoring.coreos.com/",
        "istio.io/",
        "gateway.networking.k8s.io/",
        "gateway.envoyproxy.io/",
    ];
    let core: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            let api = d["apiVersion"].as_str().unwrap_or("");
            !custom.iter().any(|group| api.contains(group))
        })
        .collect();
    let text: String = core
        .iter()
        .map(|d| format!("---\n{}", serde_norway::to_string(d).unwrap()))
        .collect();
    let file = dir.write("rendered.yaml", &text);
    for version in ["1.30.0", "1.37.0"] {
        let output = Command::new(&tool)
            .args(["--strict", "--quiet", "-k", version])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kubernetes-validate {version}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_kustomize_base_renders_validates_and_holds_what_runtime_would_find() {
    let docs = render("base");
    check_rendered(&docs, "evidentsource", "evidentsource");
    check_base_policies(&docs);
    kubernetes_validate(&docs);
    // Nothing in the base needs a CRD: the Prometheus Operator's objects are a component.
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(
            !docs.iter().any(|d| d["kind"] == kind),
            "{kind} in the base"
        );
    }
}

#[test]
fn the_example_overlay_renders_validates_and_holds_what_runtime_would_find() {
    let docs = render("overlays/example");
    check_rendered(&docs, "ledger", "ledger");
    kubernetes_validate(&docs);
    let deployment = find(&docs, "Deployment", "ledger");
    assert_eq!(deployment["metadata"]["namespace"], "evidentsource");
    assert_eq!(deployment["spec"]["replicas"], 3);
    // The environment's config replaced the component's example.
    let pod = &deployment["spec"]["template"]["spec"];
    let config = configmap_file(&docs, pod, "evs-config", "config.yaml");
    assert!(
        config.contains("https://tokens.prod.example.org"),
        "{config}"
    );
    find(&docs, "ServiceMonitor", "evs-token-vending");
    find(&docs, "PrometheusRule", "evs-token-vending");
}

#[test]
fn the_token_vending_component_joins_a_deployment_of_yours_selected_by_label_and_leaves_others() {
    let component: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo(
            "deploy/kubernetes/components/token-vending/kustomization.yaml",
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(component["kind"], "Component");
    // A kustomization of a user's own: two Deployments, one adopting the sidecar by its label.
    let dir = TempDir::new("component-user");
    let app = |name: &str, labels: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: {name}, labels: {{ {labels} }} }}\n\
             spec:\n  selector: {{ matchLabels: {{ app: {name} }} }}\n  template:\n    \
             metadata: {{ labels: {{ app: {name} }} }}\n    spec:\n      \
             securityContext: {{ runAsNonRoot: true, runAsUser: 1000, \
             seccompProfile: {{ type: RuntimeDefault }} }}\n      containers:\n        \
             - {{ name: {name}, image: 'example/{name}:1', args: [--keep-me], \
             env: [{{ name: EVS_JWT_ISSUER, value: 'https://token-vending.example.com' }}], \
             resources: {{ requests: {{ memory: 1Gi }}, limits: {{ memory: 1Gi }} }}, \
             securityContext: {{ runAsUser: 1000, allowPrivilegeEscalation: false, \
             capabilities: {{ drop: [ALL] }} }} }}\n      \
             volumes: [{{ name: data, emptyDir: {{}} }}]\n"
        )
    };
    dir.write(
        "apps.yaml",
        &format!(
            "{}---\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{ name: orders }}\n\
             spec:\n  selector: {{ app: orders }}\n  ports: [{{ port: 10000, targetPort: evs-grpc }}]\n",
            app("orders", "evs-token-vending.io/inject: 'true'"),
            app("cache", "tier: cache")
        ),
    );
    dir.write(
        "kustomization.yaml",
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [apps.yaml]\ncomponents: ['{}']\n",
            relative(
                dir.path(),
                &repo("deploy/kubernetes/components/token-vending")
            )
            .display()
        ),
    );
    let docs = crate::support::kustomize::render_path(dir.path(), "a user's kustomization");
    check_rendered(&docs, "orders", "orders");
    let orders = &find(&docs, "Deployment", "orders")["spec"]["template"]["spec"];
    // The user's own container and volume are as they wrote them.
    let own = container(orders, "orders");
    assert_eq!(own["args"], serde_json::json!(["--keep-me"]));
    assert!(
        orders["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "data"),
        "the user's volume is kept"
    );
    for added in ["check-config", "token-vending", "envoy"] {
        container(orders, added);
    }
    // The Deployment without the label is untouched.
    let cache = &find(&docs, "Deployment", "cache")["spec"]["template"]["spec"];
    assert_eq!(containers(cache).len(), 1, "{cache}");
    assert!(cache["initContainers"].is_null());
}

/// `to` as seen from `from` (kustomize takes no absolute component paths).
fn relative(from: &std::path::Path, to: &std::path::Path) -> std::path::PathBuf {
    let (from, to) = (from.canonicalize().unwrap(), to.canonicalize().unwrap());
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut path: std::path::PathBuf = from.components().skip(common).map(|_| "..").collect();
    path.extend(to.components().skip(common));
    path
}

#[test]
fn no_shipped_patch_addresses_a_list_by_position() {
    // `containers/1/env/1` breaks silently when a container or a variable is added before it;
    // strategic merges by name and map keys do not.
    let mut files = Vec::new();
    let mut folders = vec![repo("deploy/kubernetes")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 10, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let Some(path) = line.trim().split("path:").nth(1) else {
                continue;
            };
            let path = path.trim().trim_end_matches([',', '}']).trim();
            assert!(
                !path
                    .split('/')
                    .any(|segment| !segment.is_empty()
                        && segment.bytes().all(|b| b.is_ascii_digit())),
                "{}: `{path}` patches a list position",
                file.display()
            );
        }
    }
}

/// A gateway recipe's authz Service: its namespace, name and ext_authz port, and the sidecar's
/// rendered config (checked to listen where the Service sends).
struct AuthzService<'a> {
    namespace: String,
    name: String,
    port: u64,
    config: Value,
    sidecar: &'a Value,
    pod: &'a Value,
}

fn authz_service(docs: &[Value]) -> AuthzService<'_> {
    let service = find(docs, "Service", "evs-token-vending");
    let grpc = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "grpc-authz")
        .expect("a grpc-authz port");
    let pod = &find(docs, "Deployment", "evs-token-vending")["spec"]["template"]["spec"];
    let sidecar = container(pod, "token-vending");
    let config: Value =
        serde_norway::from_str(configmap_file(docs, pod, "config", "config.yaml")).unwrap();
    let target = port_number(sidecar, &grpc["targetPort"]);
    assert_eq!(
        config["listen"]["authz"].as_str().unwrap(),
        format!("0.0.0.0:{target}"),
        "ext_authz listens where the Service sends"
    );
    assert_file_argument_mounted(sidecar, "--config");
    AuthzService {
        namespace: service["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_owned(),
        name: service["metadata"]["name"].as_str().unwrap().to_owned(),
        port: grpc["port"].as_u64().unwrap(),
        config,
        sidecar,
        pod,
    }
}

impl AuthzService<'_> {
    fn host(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }

    /// mTLS is on and each of its files is mounted from the Secret.
    fn assert_mutual_tls(&self) {
        let tls = &self.config["listen"]["authz_tls"];
        for key in ["cert_file", "key_file", "client_ca_file"] {
            let file = tls[key]
                .as_str()
                .unwrap_or_else(|| panic!("authz_tls.{key}"));
            assert!(mounted(self.sidecar, file), "{file} is not mounted");
        }
        assert!(
            self.pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["secret"]["secretName"] == "evs-token-vending-authz-tls")
        );
    }
}

#[test]
fn the_gateway_recipes_render_validate_and_point_at_one_another() {
    // Istio: the provider in the mesh config names the authz Service; the policy names the
    // provider; the mesh's mTLS (STRICT) guards the Check, so the sidecar trusts no peer
    // certificates of its own.
    let docs = render("gateways/istio");
    kubernetes_validate(&docs);
    let authz = authz_service(&docs);
    let mesh: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo("deploy/kubernetes/gateways/istio/mesh-config.yaml"))
            .unwrap(),
    )
    .unwrap();
    let provider = &mesh["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(
        provider["envoyExtAuthzGrpc"]["service"].as_str().unwrap(),
        format!("{}.cluster.local", authz.host())
    );
    assert_eq!(provider["envoyExtAuthzGrpc"]["port"], authz.port);
    assert_eq!(provider["envoyExtAuthzGrpc"]["failOpen"], false);
    let policy = find(&docs, "AuthorizationPolicy", "evs-token-vending");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    let strict = find(&docs, "PeerAuthentication", "evs-token-vending");
    assert_eq!(strict["spec"]["mtls"]["mode"], "STRICT");
    assert!(authz.config["listen"]["authz_tls"].is_null());
    assert!(authz.config["client_certs"].is_null());

    // Envoy Gateway: the SecurityPolicy's gRPC backend is the authz Service, over TLS checked
    // against its name, with the gateway's client certificate; the sidecar requires it.
    let docs = render("gateways/envoy-gateway");
    kubernetes_validate(&docs);
    let authz = authz_service(&docs);
    authz.assert_mutual_tls();
    let policy = &find(&docs, "SecurityPolicy", "evs-token-vending")["spec"]["extAuth"];
    assert_eq!(policy["failOpen"], false);
    let backend = &policy["grpc"]["backendRefs"][0];
    assert_eq!(backend["name"].as_str().unwrap(), authz.name);
    assert_eq!(backend["port"], authz.port);
    let tls = &find(&docs, "BackendTLSPolicy", "evs-token-vending")["spec"];
    assert_eq!(tls["targetRefs"][0]["name"].as_str().unwrap(), authz.name);
    assert_eq!(tls["targetRefs"][0]["sectionName"], "grpc-authz");
    assert_eq!(
        tls["validation"]["hostname"].as_str().unwrap(),
        authz.host()
    );
    let proxy = find(&docs, "EnvoyProxy", "evs-gateway");
    assert!(proxy["spec"]["backendTLS"]["clientCertificateRef"]["name"].is_string());

    // A shared Envoy: its ext_authz cluster dials the authz Service by name over mTLS, with
    // its client certificate mounted where its config reads it.
    let docs = render("gateways/shared-envoy");
    kubernetes_validate(&docs);
    let authz = authz_service(&docs);
    authz.assert_mutual_tls();
    let pod = &find(&docs, "Deployment", "shared-envoy")["spec"]["template"]["spec"];
    let envoy = container(pod, "envoy");
    let envoy_config: Value =
        serde_norway::from_str(configmap_file(&docs, pod, "config", "envoy.yaml")).unwrap();
    let cluster = envoy_config["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ext_authz")
        .unwrap();
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(
        address["address"].as_str().unwrap(),
        format!("{}.cluster.local", authz.host())
    );
    assert_eq!(address["port_value"], authz.port);
    let upstream = &cluster["transport_socket"]["typed_config"];
    assert_eq!(upstream["sni"].as_str().unwrap(), authz.host());
    let context = &upstream["common_tls_context"];
    for file in [
        &context["tls_certificates"][0]["certificate_chain"]["filename"],
        &context["tls_certificates"][0]["private_key"]["filename"],
        &context["validation_context"]["trusted_ca"]["filename"],
    ] {
        let file = file.as_str().unwrap();
        assert!(mounted(envoy, file), "{file} is not mounted into Envoy");
    }
}

#[test]
fn every_envoy_config_shipped_passes_envoy_validate_as_shipped() {
    let envoy = crate::support::envoy::envoy_binary();
    // envoy-mtls.yaml names tls/ files relative to Envoy's working directory.
    let dir = TempDir::new("envoy-validate");
    let tls = crate::support::envoy::TlsFiles::throwaway();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    for (name, text) in [
        ("server.pem", &tls.server_pem),
        ("server-key.pem", &tls.server_key),
        ("client-ca.pem", &tls.client_ca),
    ] {
        std::fs::write(dir.path().join("tls").join(name), text).unwrap();
    }
    for file in [
        "envoy.yaml",
        "envoy-mtls.yaml",
        "deploy/kubernetes/components/token-vending/envoy.yaml",
    ] {
        let output = Command::new(&envoy)
            .args(["--mode", "validate", "-c"])
            .arg(repo(file))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "envoy --mode validate {file}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // envoy.yaml needs no file: it validates from an empty folder too.
    let empty = TempDir::new("envoy-empty");
    let output = Command::new(&envoy)
        .args(["--mode", "validate", "-c"])
        .arg(repo("envoy.yaml"))
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert!(output.status.success());
}

#[tokio::test]
async fn the_sidecar_reads_its_keys_as_the_manifests_user_with_the_manifests_file_modes() {
    use std::os::unix::fs::{PermissionsExt, chown};
    // Never skipped: without root the file owners and the user cannot be set, and the test
    // fails saying so (CI and this project's machines run the suite as root).
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    assert!(
        is_root,
        "this test changes file owners and users: run it as root (setpriv drops to the manifest's user)"
    );
    let docs = render("base");
    let pod = &find(&docs, "Deployment", "evidentsource")["spec"]["template"]["spec"];
    let security = &pod["securityContext"];
    let (user, group) = (
        security["runAsUser"].as_u64().unwrap() as u32,
        security["fsGroup"].as_u64().unwrap() as u32,
    );
    let keys_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "evs-keys")
        .unwrap();
    let mode = keys_volume["secret"]["defaultMode"].as_u64().unwrap() as u32;

    let idp = evs_token_vending::demo::DemoIdp::start().await.unwrap();
    let dir = TempDir::new("unprivileged");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let keys = dir.path().join("keys");
    let keygen = Command::new(env!("CARGO_BIN_EXE_evs-token-vending"))
        .args(["keygen", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let pem = std::fs::read_dir(&keys)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    std::fs::write(keys.join("active"), format!("{}\n", pem.to_string_lossy())).unwrap();
    dir.write("grants.yaml", evs_token_vending::demo::SAMPLE_GRANTS);
    let (authz, http) = (crate::support::free_port(), crate::support::free_port());
    let config = dir.write(
        "config.yaml",
        &format!(
            "listen: {{ authz: '127.0.0.1:{authz}', http: '127.0.0.1:{http}' }}
token: {{ issuer: https://tv.example.com }}
signing: {{ keys_dir: '{}' }}
trust: [ {{ issuer: '{}' }} ]
grants: {{ file: grants.yaml }}
",
            keys.display(),
            idp.issuer()
        ),
    );
    // As the kubelet mounts a Secret: files root-owned, group fsGroup, mode defaultMode.
    let mount_as = |mode: u32| {
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(&keys).unwrap() {
            let path = entry.unwrap().path();
            chown(&path, Some(0), Some(group)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    let as_user = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args([
                format!("--reuid={user}"),
                format!("--regid={group}"),
                "--clear-groups".into(),
            ])
            .arg(env!("CARGO_BIN_EXE_evs-token-vending"))
            .args(args)
            .arg(&config)
            .env("RUST_LOG", "warn");
        command
    };

    // Root-only 0400, the old manifest's mode: the non-root user cannot read the key, and
    // check-config says so.
    mount_as(0o400);
    let refused = as_user(&["check-config", "--config"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let printed = String::from_utf8_lossy(&refused.stderr);
    assert!(
        printed.contains("signing:") && printed.contains("ermission denied")
            || printed.contains("cannot read"),
        "{printed}"
    );

    // The manifest's mode and group: check-config passes and serve starts and signs.
    mount_as(mode);
    let checked = as_user(&["check-config", "--config"]).output().unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let mut serve = as_user(&["serve", "--config"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let ready = loop {
        if let Ok(answer) =
            reqwest::get(format!("http://127.0.0.1:{http}/.well-known/jwks.json")).await
        {
            break answer.json::<Value>().await.unwrap();
        }
        assert!(
            serve.try_wait().unwrap().is_none(),
            "serve exited as user {user}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "serve did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(ready["keys"].as_array().unwrap().len(), 1, "{ready}");
}

#[path = "../support/image_build.rs"]
mod image_build;

/// The image builds from what its `COPY` lines bring: every manifest and target resolves in
/// each build stage (0.10.0's hand-written stubs missed two benches and the build stopped at
/// its first `RUN`), replayed the way a builder runs the stages, without a daemon.
#[test]
fn the_images_build_stages_resolve_every_target_from_what_they_copy() {
    let scratch = TempDir::new("image-build");
    image_build::replay(&repo("deploy/Dockerfile"), &repo("."), scratch.path())
        .unwrap_or_else(|e| panic!("the image's build would fail: {e}"));
}

/// `deploy/aws/`'s permission policies pass `parliament` (PyPI) with no finding at any
/// severity, and every file, the IRSA trust policy included, is accepted by IAM's API (moto)
/// as what it is: a managed policy, or a role's trust policy.
#[test]
fn the_aws_policies_lint_clean_and_iam_accepts_them() {
    let parliament =
        crate::support::python::python_tool_in("parliament-venv", "parliament==1.6.3", |venv| {
            Some(venv.join("bin/parliament")).filter(|p| p.is_file())
        });
    let moto = crate::support::moto::Moto::start();
    let aws = |args: &[&str]| crate::support::aws_iam::aws(&moto.endpoint, args);
    let mut files: Vec<_> = std::fs::read_dir(repo("deploy/aws"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let document = std::fs::read_to_string(&file).unwrap();
        let policy: Value = serde_json::from_str(&document).expect("JSON");
        if name == "irsa-trust-policy" {
            // A trust policy has a Principal and no Resource; parliament reads only identity
            // policies, so IAM's own acceptance and the conditions that matter are checked.
            let statement = &policy["Statement"][0];
            assert_eq!(statement["Action"], "sts:AssumeRoleWithWebIdentity");
            let conditions = statement["Condition"]["StringEquals"].as_object().unwrap();
            assert!(
                conditions.keys().any(|k| k.ends_with(":sub")),
                "bound to one service account"
            );
            assert!(
                conditions.keys().any(|k| k.ends_with(":aud")),
                "bound to STS's audience"
            );
            aws(&[
                "iam",
                "create-role",
                "--role-name",
                "evs-token-vending",
                "--assume-role-policy-document",
                &document,
            ]);
            continue;
        }
        let output = Command::new(&parliament)
            .args(["--json", "--string", &document])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run parliament");
        let findings = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && findings.trim().is_empty(),
            "{name}: {findings}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let created = aws(&[
            "iam",
            "create-policy",
            "--policy-name",
            &name,
            "--policy-document",
            &document,
        ]);
        assert_eq!(created["Policy"]["PolicyName"], name.as_str());
    }
}
