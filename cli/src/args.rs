//! The command line: global options and one subcommand, as clap parses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// The exit codes, for `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the Volt answered with an error status (also: session invalid, access denied)
  2  usage: bad arguments, request JSON, unknown method, a request the API cannot encode
  3  configuration: the client configuration (or its key) is missing or unusable
  4  connection: could not connect, TLS, key exchange, timeout, connection lost
  5  local I/O: a local file could not be read or written
  6  protocol: the Volt sent something unexpected, or a limit was reached

Configuration: --config FILE, else $VOLT_CONFIG, else ./client.config.json.
An encrypted key is decrypted with $VOLT_KEY_PASSPHRASE.";

/// volt: a command line for tdx Volt.
#[derive(Debug, Parser)]
#[command(name = "volt", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The client configuration the Volt issued.
    #[arg(long, global = true, env = "VOLT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which transport carries the calls.
    #[arg(long, global = true, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,
    /// Print JSON for scripts instead of text for people (errors too, on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Bound on connecting and on each wait for the Volt, in seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// `--transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// gRPC when the configuration has a gRPC endpoint, else the websocket gateway.
    Auto,
    /// Native gRPC (or through the configuration's relay).
    Grpc,
    /// The websocket gateway (protocol v1).
    Websocket,
    /// The older websocket protocol of RSA-era Volts.
    LegacyWebsocket,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call any RPC: `volt call GetResource '{"resource_id": "..."}'`. METHOD is a name
    /// (GetResource), Service/Method or the full path. Streaming methods print responses as
    /// JSON lines; those that take more than one request read the rest from stdin as JSON
    /// lines, and end their side of the call at the end of stdin.
    Call {
        /// The method.
        method: String,
        /// The (first) request as JSON, or `-` to read it from stdin (default `{}`).
        request: Option<String>,
        /// Keep the call open at the end of stdin (a subscription fed from /dev/null);
        /// stop with Ctrl-C.
        #[arg(long)]
        keep_open: bool,
    },
    /// Show a resource.
    Get {
        /// The resource id.
        id: String,
    },
    /// List a resource's descendants as a tree (default: the Volt itself).
    Ls {
        /// The resource id.
        id: Option<String>,
        /// How many levels to show.
        #[arg(long, default_value_t = 3)]
        depth: u32,
    },
    /// Delete a resource.
    Rm {
        /// The resource id.
        id: String,
        /// Delete its descendants too.
        #[arg(long, short)]
        recursive: bool,
    },
    /// Run an SQL statement on a database and print the rows.
    Sql {
        /// The database's resource id.
        database: String,
        /// The statement.
        statement: String,
        /// How to print the rows (default: table; json with --json).
        #[arg(long, value_enum)]
        format: Option<SqlFormat>,
    },
    /// Publish to and subscribe to wires.
    Wire {
        #[command(subcommand)]
        action: WireCommand,
    },
    /// Move file content to and from the Volt, with progress bars.
    File {
        #[command(subcommand)]
        action: FileCommand,
    },
    /// Ask the Volt for a session (Authenticate) and save it into the configuration.
    Auth {
        /// The client name the Volt shows to whoever decides.
        #[arg(long)]
        name: Option<String>,
        /// What identity to ask for.
        #[arg(long, value_enum, default_value_t = IdentityArg::Default)]
        identity: IdentityArg,
    },
    /// Open a session and print its events, one JSON object per line, until Ctrl-C.
    Session,
    /// Run a local Volt (volt-emulator) in the foreground until Ctrl-C; prints the path of
    /// the client configuration it wrote.
    Emulator {
        /// Where it keeps its state.
        #[arg(long, default_value = "./volt-data")]
        dir: PathBuf,
    },
}

/// `volt sql --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    /// An aligned table.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of row objects.
    Json,
}

/// `volt auth --identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdentityArg {
    /// The credential's DID if it has one, else a DID the Volt makes.
    Default,
    /// A session for the key alone.
    SessionOnly,
    /// A DID the Volt makes.
    VoltDid,
    /// A DID document signed with the client key.
    OwnDid,
}

/// `volt wire ...`.
#[derive(Debug, Subcommand)]
pub enum WireCommand {
    /// Write the chunks published to a wire to stdout as they come, until Ctrl-C.
    Sub {
        /// The wire's resource id.
        id: String,
    },
    /// Publish each line of stdin (newline kept) as a chunk, or a file in blocks.
    Pub {
        /// The wire's resource id.
        id: String,
        /// Publish this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// `volt file ...`.
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Upload a local file: into file resource ID, or a new one named after it.
    Put {
        /// The local file.
        local: PathBuf,
        /// The file resource to replace (default: a new one).
        id: Option<String>,
        /// Where to make the new file resource (default: the Volt decides).
        #[arg(long, value_name = "ID", conflicts_with = "id")]
        parent: Option<String>,
    },
    /// Download a file resource: to LOCAL, `-` for stdout, or (default) a new file in the
    /// current directory named after the resource.
    Get {
        /// The file resource.
        id: String,
        /// Where to write it.
        local: Option<PathBuf>,
    },
}
