//! The clients generated from the committed OpenAPI documents (`make clients`: TypeScript with
//! openapi-typescript + openapi-fetch, Python with openapi-python-client) talk to the real
//! services: each program in clients/ writes a user, an order and its payment through the command
//! API and reads them back through the query API with the consistency tokens. Both APIs require
//! a token here, and the clients send it as their generators let them (openapi-fetch's headers,
//! openapi-python-client's `AuthenticatedClient`).

use crate::support;

use crate::support::tools;
use eventline_testkit::TestEnv;
use tokio::process::Command;

const TOKEN: &str = "generated-client-token-0001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_clients_write_and_read_back_through_both_apis() {
    let env = TestEnv::new().await;
    let tokens = format!("client:read+write:{TOKEN}");
    let mut config = support::command_config(&env);
    config.access = support::token_access(&tokens);
    let command = support::command_with(config).await;
    let _projector = support::projector(&env).await;
    let mut config = support::query_config(&env);
    config.access = support::token_access(&tokens);
    let query = support::query_with(config).await;

    let clients = tools::clients_dir();
    let mut typescript = Command::new("node");
    typescript.arg(clients.join("typescript/dist/check.js"));
    let mut python = Command::new(tools::python_venv().join("bin/python"));
    python.arg(tools::repository().join("clients/python/check.py")).env("PYTHONPATH", clients.join("python"));

    for (name, mut program) in [("typescript", typescript), ("python", python)] {
        program.env("COMMAND_URL", command.url("")).env("QUERY_URL", query.url("")).env("API_TOKEN", TOKEN);
        let output = tools::run(program, &format!("the {name} client check")).await;
        let printed = tools::printed(&output);
        assert!(output.status.success(), "the {name} client check failed:\n{printed}");
        assert!(printed.contains(&format!("{name} client: user")), "{printed}");
    }
}
