//! The clients generated from the committed OpenAPI documents (`make clients`: TypeScript with
//! openapi-typescript + openapi-fetch, Python with openapi-python-client) talk to the real
//! services: each program in clients/ writes a user, an order and its payment through the command
//! API and reads them back through the query API with the consistency tokens.

use crate::support;

use crate::support::tools;
use eventline_testkit::TestEnv;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_clients_write_and_read_back_through_both_apis() {
    let env = TestEnv::new().await;
    let command = support::command(&env).await;
    let _projector = support::projector(&env).await;
    let query = support::query(&env).await;

    let clients = tools::clients_dir();
    let mut typescript = Command::new("node");
    typescript.arg(clients.join("typescript/dist/check.js"));
    let mut python = Command::new(tools::python_venv().join("bin/python"));
    python.arg(tools::repository().join("clients/python/check.py")).env("PYTHONPATH", clients.join("python"));

    for (name, mut program) in [("typescript", typescript), ("python", python)] {
        program.env("COMMAND_URL", command.url("")).env("QUERY_URL", query.url(""));
        let output = tools::run(program, &format!("the {name} client check")).await;
        let printed = tools::printed(&output);
        assert!(output.status.success(), "the {name} client check failed:\n{printed}");
        assert!(printed.contains(&format!("{name} client: user")), "{printed}");
    }
}
