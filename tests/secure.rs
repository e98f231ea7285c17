//! The stack over secured connections, as managed services require them: Apache Kafka on a
//! SASL_SSL listener (SCRAM-SHA-512, the broker's certificate signed by a CA made here with
//! openssl), a PostgreSQL that refuses every connection without TLS (`sslmode=verify-full`), and a
//! Redis that speaks only TLS (`rediss://`). A user, an order and a payment go from POST to GET
//! through them; a wrong password and an untrusted certificate are start-up errors that name the
//! dependency within seconds.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use eventline_runtime::config::{
    DatabaseConfig, KafkaConfig, KafkaSecurity, RedisConfig, SaslMechanism, Secret, SecurityProtocol,
};
use eventline_testkit::{OwnBroker, TestEnv, eventually, http};
use eventline_tools::sandbox::{Postgres, Redis};
use serde_json::{Value, json};

const USER: &str = "eventline";
const PASSWORD: &str = "correct-horse-battery-staple";

/// A CA, and a certificate it signed for 127.0.0.1 and localhost, made with openssl.
pub(crate) struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    pub(crate) fn make(dir: &Path) -> Certificates {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        // A P-256 key in PKCS#8 (the form Kafka's PEM key store reads).
        let new_key = |name: &str| {
            openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name])
        };
        for ca in ["ca", "other-ca"] {
            let (key, certificate) = (format!("{ca}.key"), format!("{ca}.pem"));
            new_key(&key);
            let subject = format!("/CN=eventline test {ca}");
            openssl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-subj",
                &subject,
                "-days",
                "2",
                "-out",
                &certificate,
            ]);
        }
        new_key("server.key");
        openssl(&["req", "-new", "-key", "server.key", "-subj", "/CN=127.0.0.1", "-out", "server.csr"]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        // Kafka's PEM key store: the private key (PKCS#8) followed by the certificate.
        let keystore = std::fs::read_to_string(dir.join("server.key")).unwrap()
            + &std::fs::read_to_string(dir.join("server.pem")).unwrap();
        std::fs::write(dir.join("kafka-keystore.pem"), keystore).unwrap();
        Certificates { dir: dir.to_owned() }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn text(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A broker with a SASL_SSL listener (SCRAM-SHA-512, a user created when its storage is
/// formatted) beside the plaintext one it uses between its own parts; returns it and the
/// listener's address.
async fn secured_broker(certificates: &Certificates) -> (OwnBroker, String) {
    let port = eventline_testkit::kafka::free_port().unwrap();
    let address = format!("127.0.0.1:{port}");
    let broker = OwnBroker::start_with(vec![
        "--listener".into(),
        format!("SASL_SSL://{address}"),
        "--add-scram".into(),
        format!("SCRAM-SHA-512=[name={USER},password={PASSWORD}]"),
        "--".into(),
        "sasl.enabled.mechanisms=SCRAM-SHA-512".into(),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
         org.apache.kafka.common.security.scram.ScramLoginModule required;"
            .into(),
        "ssl.keystore.type=PEM".into(),
        format!("ssl.keystore.location={}", certificates.text("kafka-keystore.pem")),
        "ssl.truststore.type=PEM".into(),
        format!("ssl.truststore.location={}", certificates.text("ca.pem")),
    ])
    .await;
    (broker, address)
}

fn kafka_security(certificates: &Certificates, password: &str, ca: &str) -> KafkaSecurity {
    KafkaSecurity {
        protocol: SecurityProtocol::SaslSsl,
        sasl_mechanism: Some(SaslMechanism::ScramSha512),
        sasl_username: Some(USER.into()),
        sasl_password: Some(Secret::from(password)),
        ssl_ca_location: Some(certificates.path(ca)),
        ..KafkaSecurity::default()
    }
}

/// A PostgreSQL cluster that accepts only TLS connections, with the server certificate above.
fn tls_only_postgres(dir: &Path, certificates: &Certificates) -> Postgres {
    // The server reads its key as its own user, and only a key no one else may read.
    let (certificate, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(certificates.path("server.pem"), &certificate).unwrap();
    std::fs::copy(certificates.path("server.key"), &key).unwrap();
    let owner = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&owner.stdout).trim() == "0" {
        assert!(Command::new("chown").args(["-R", "postgres"]).arg(dir).status().unwrap().success());
    }
    assert!(Command::new("chmod").arg("600").arg(&key).status().unwrap().success());
    let options =
        format!("-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", certificate.display(), key.display());
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n";
    Postgres::start_with(&dir.join("cluster"), &options, Some(hba)).unwrap()
}

/// The test's slice of the secured services: a database, a topic, Redis.
async fn secured_env(kafka: KafkaConfig, postgres: &Postgres, redis: &Redis, ca: &Path) -> TestEnv {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let url = format!(
        "{}/eventline_secure_{id}?sslmode=verify-full&sslrootcert={}",
        postgres.server_url(),
        ca.display()
    );
    let database = DatabaseConfig { url, max_connections: 8 };
    eventline_runtime::db::ensure_database(&database.url).await.unwrap();
    let public = eventline_runtime::db::pool(&database).unwrap();
    eventline_runtime::db::migrate(&public).await.unwrap();
    public.close().await;
    let pool = eventline_read_models::pool(&database, eventline_testkit::FIRST_VERSION).unwrap();
    let redis = RedisConfig { ca_cert: Some(ca.to_owned()), ..RedisConfig::at(redis.url()) };
    TestEnv { kafka, database, redis, pool, id }
}

/// The secured dependencies of one test, and its slice of them; removed when dropped.
struct Secured {
    env: TestEnv,
    certificates: Certificates,
    redis: Redis,
    _postgres: Postgres,
    _broker: OwnBroker,
    dir: PathBuf,
}

impl Secured {
    async fn start() -> Secured {
        let dir = std::env::temp_dir().join(format!("eventline-secure-{}", uuid::Uuid::new_v4().simple()));
        let certificates = Certificates::make(&dir.join("certificates"));
        let (broker, address) = secured_broker(&certificates).await;
        let postgres = tls_only_postgres(&dir.join("postgres"), &certificates);
        let (certificate, key) = (certificates.path("server.pem"), certificates.path("server.key"));
        let redis = Redis::start_tls(&dir.join("redis"), &certificate, &key).unwrap();
        let kafka = KafkaConfig {
            brokers: address,
            topic: format!("eventline.secure.{}", uuid::Uuid::new_v4().simple()),
            topic_partitions: 3,
            topic_replication: 1,
            manage_topic: true,
            topic_check_secs: 30,
            security: kafka_security(&certificates, PASSWORD, "ca.pem"),
        };
        let env = secured_env(kafka, &postgres, &redis, &certificates.path("ca.pem")).await;
        Secured { env, certificates, redis, _postgres: postgres, _broker: broker, dir }
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// POSTs `body`; the answer's JSON and consistency token.
async fn post(url: String, body: Value) -> (Value, String) {
    let response = http().post(url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
    (response.json().await.unwrap(), token)
}

/// GETs `url` once the read models reached `token`.
async fn read(url: String, token: &str) -> Value {
    eventually(Duration::from_secs(30), "the read models to reach the token", || {
        let url = url.clone();
        async move {
            let response = http().get(url).header("consistency-token", token).send().await.ok()?;
            (response.status() == 200).then_some(response.json().await.ok()?)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_an_order_and_a_payment_go_through_secured_kafka_postgres_and_redis() {
    let secured = Secured::start().await;
    let env = &secured.env;

    // The database refuses a connection without TLS: the one above was encrypted.
    let plaintext = env.database.url.replace("sslmode=verify-full", "sslmode=disable");
    let refused = sqlx::PgPool::connect(&plaintext).await;
    assert!(
        format!("{:?}", refused.expect_err("a plaintext connection is refused")).contains("no encryption")
    );

    let (command, projector, query) =
        (support::command(env).await, support::projector(env).await, support::query(env).await);
    let (user, _) = post(
        command.url("/users"),
        json!({"email": "grace@example.com", "firstName": "Grace", "lastName": "Hopper"}),
    )
    .await;
    let user_id = user["userId"].as_str().unwrap().to_owned();
    let (order, _) = post(
        command.url("/orders"),
        json!({"userId": user_id, "currency": "EUR", "items": [{"sku": "SECURE-1", "quantity": 3, "price": "4.50"}]}),
    )
    .await;
    let order_id = order["orderId"].as_str().unwrap().to_owned();
    let (payment, token) = post(
        command.url(&format!("/orders/{order_id}/payments")),
        json!({"amount": "13.50", "currency": "EUR", "paymentMethod": "credit_card"}),
    )
    .await;

    let read_order = read(query.url(&format!("/orders/{order_id}")), &token).await;
    assert_eq!(read_order["payment"]["paymentId"], payment["paymentId"]);
    assert_eq!(read_order["items"], json!([{"sku": "SECURE-1", "quantity": 3, "price": "4.50"}]));
    let read_user = read(query.url(&format!("/users/{user_id}")), &token).await;
    assert_eq!(read_user["email"], "grace@example.com");
    assert_eq!(read_user["orders"][0]["orderId"], order_id.as_str());

    // Every service is ready: each reached Kafka, PostgreSQL and (command, projector) Redis.
    for service in [&command, &projector, &query] {
        let ready = http().get(service.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    }
    // The projector's fast path reached the TLS-only Redis: its dedup keys are there.
    let redis_client = redis::Client::build_with_tls(
        secured.redis.url().as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(secured.certificates.path("ca.pem")).unwrap()),
        },
    )
    .unwrap();
    let mut connection = redis_client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut connection).await.unwrap();
    assert!(!keys.is_empty(), "nothing reached the TLS-only Redis");

    for service in [command, projector, query] {
        service.stop().await.unwrap();
    }
}

/// Builds the command service and expects a start-up error within a few seconds.
async fn refused_start(env: &TestEnv) -> (String, Duration) {
    let started = Instant::now();
    let built = tokio::time::timeout(
        Duration::from_secs(30),
        eventline_command::Application::build(support::command_config(env)),
    )
    .await
    .expect("start-up hangs instead of failing");
    let error = format!("{:#}", built.err().expect("start-up must fail"));
    (error, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_untrusted_certificate_is_a_clear_start_up_error() {
    let secured = Secured::start().await;
    let (env, certificates, kafka) = (&secured.env, &secured.certificates, &secured.env.kafka);

    let wrong_password = TestEnv {
        kafka: KafkaConfig { security: kafka_security(certificates, "wrong", "ca.pem"), ..kafka.clone() },
        ..clone_env(env)
    };
    let (error, took) = refused_start(&wrong_password).await;
    eprintln!("wrong Kafka password: {error} ({took:?})");
    assert!(error.contains("Kafka") && error.contains("SASL authentication failed"), "{error}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let untrusted = TestEnv {
        kafka: KafkaConfig {
            security: kafka_security(certificates, PASSWORD, "other-ca.pem"),
            ..kafka.clone()
        },
        ..clone_env(env)
    };
    let (error, took) = refused_start(&untrusted).await;
    eprintln!("untrusted Kafka certificate: {error} ({took:?})");
    assert!(error.contains("Kafka") && error.contains("TLS") && error.contains("UnknownIssuer"), "{error}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let database_url = env.database.url.replace("ca.pem", "other-ca.pem");
    let untrusted_database =
        TestEnv { database: DatabaseConfig { url: database_url, ..env.database.clone() }, ..clone_env(env) };
    let (error, took) = refused_start(&untrusted_database).await;
    eprintln!("untrusted PostgreSQL certificate: {error} ({took:?})");
    assert!(error.contains("PostgreSQL") && error.contains("UnknownIssuer"), "{error}");
    assert!(!error.contains(PASSWORD));
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

fn clone_env(env: &TestEnv) -> TestEnv {
    TestEnv {
        kafka: env.kafka.clone(),
        database: env.database.clone(),
        redis: env.redis.clone(),
        pool: env.pool.clone(),
        id: env.id.clone(),
    }
}
