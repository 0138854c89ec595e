// The settings of a server process. Each service has one table (its
// settings.ts) naming, for every setting, its flag, its environment variable,
// its default and what it means. main.ts reads its configuration through its
// table only, the library takes its defaults from it, and
// docs/configuration.md is generated from the tables
// (scripts/gen-config-docs.ts). A flag wins over the environment variable,
// which wins over the default; an empty environment variable counts as unset.
import { Command, CommanderError, Option } from 'commander';

export interface Setting<V> {
  /** Command-line flag without the dashes; none for secrets, which stay off the command line (and out of `ps`). */
  flag?: string;
  /** Environment variable; none for what must be asked for on the command line itself (--insecure). */
  env?: string;
  kind: 'text' | 'integer' | 'switch';
  /** The value when neither the flag nor the variable is given. */
  default: V;
  /** How the docs show a default derived from other settings, e.g. "<data dir>/issuer.sqlite". */
  defaultText?: string;
  meaning: string;
}

export type SettingsTable = Record<string, Setting<unknown>>;
export type SettingValues<T extends SettingsTable> = { [K in keyof T]: T[K] extends Setting<infer V> ? V : never };

/** A text setting with a default. */
export const text = (flag: string | undefined, env: string | undefined, def: string, meaning: string): Setting<string> => ({ flag, env, kind: 'text', default: def, meaning });

/** A text setting that may stay unset (its default derived from others, shown as defaultText). */
export const optionalText = (flag: string | undefined, env: string | undefined, meaning: string, defaultText = 'unset'): Setting<string | undefined> => ({
  flag,
  env,
  kind: 'text',
  default: undefined,
  defaultText,
  meaning,
});

export const integer = (flag: string, env: string, def: number, meaning: string): Setting<number> => ({ flag, env, kind: 'integer', default: def, meaning });

/** A flag without a value (e.g. --insecure), off unless given. */
export const onSwitch = (flag: string, env: string | undefined, meaning: string): Setting<boolean> => ({ flag, env, kind: 'switch', default: false, meaning });

export class SettingsError extends Error {}

const nameOf = (s: Setting<unknown>) => [s.flag && `--${s.flag}`, s.env].filter(Boolean).join(' / ');

function convert(s: Setting<unknown>, raw: string): unknown {
  if (s.kind === 'text') return raw;
  if (s.kind === 'switch') {
    if (raw === '1' || raw === 'true') return true;
    if (raw === '0' || raw === 'false') return false;
    throw new SettingsError(`${nameOf(s)} must be true or false, got ${JSON.stringify(raw)}`);
  }
  if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(Number(raw))) throw new SettingsError(`${nameOf(s)} must be an integer, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

const shownDefault = (s: Setting<unknown>) => s.defaultText ?? (s.kind === 'switch' ? 'off' : String(s.default));

/** The commander program of a table: its flags, and --help that shows each one's variable and default. */
export function settingsCommand(name: string, table: SettingsTable, description = ''): Command {
  const program = new Command(name).description(description).allowExcessArguments(false);
  for (const s of Object.values(table)) {
    if (!s.flag) continue;
    const help = `${s.meaning}${s.env ? ` [env ${s.env}]` : ''} (default: ${shownDefault(s)})`;
    program.addOption(new Option(s.kind === 'switch' ? `--${s.flag}` : `--${s.flag} <value>`, help));
  }
  return program;
}

const camel = (flag: string) => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/**
 * The values of a table from command-line arguments (without node and the
 * script) and an environment. Throws SettingsError on an unknown flag or a
 * value of the wrong kind; --help prints the table and exits.
 */
export function readSettings<T extends SettingsTable>(name: string, table: T, argv: string[], env: NodeJS.ProcessEnv): SettingValues<T> {
  const program = settingsCommand(name, table)
    .exitOverride()
    .configureOutput({ writeErr: () => {} });
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError && (err.code === 'commander.helpDisplayed' || err.code === 'commander.help')) process.exit(0);
    throw new SettingsError(err instanceof Error ? err.message.replace(/^error: /, '') : String(err));
  }
  const flags = program.opts<Record<string, string | boolean | undefined>>();
  const values: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(table)) {
    const fromFlag = s.flag ? flags[camel(s.flag)] : undefined;
    const fromEnv = s.env ? env[s.env] : undefined;
    if (fromFlag !== undefined) values[key] = typeof fromFlag === 'boolean' ? fromFlag : convert(s, fromFlag);
    else if (fromEnv !== undefined && fromEnv !== '') values[key] = convert(s, fromEnv);
    else values[key] = s.default;
  }
  return values as SettingValues<T>;
}

/** readSettings for this process; a bad setting ends it with the reason (exit code 2), not a stack trace. */
export function processSettings<T extends SettingsTable>(name: string, table: T): SettingValues<T> {
  try {
    return readSettings(name, table, process.argv.slice(2), process.env);
  } catch (err) {
    if (!(err instanceof SettingsError)) throw err;
    process.stderr.write(`${name}: ${err.message}\n`);
    process.exit(2);
  }
}

/** The rows of a table for the docs: flag, variable, default, meaning. */
export function settingsRows(table: SettingsTable): { flag: string; env: string; default: string; meaning: string }[] {
  return Object.values(table).map((s) => ({
    flag: s.flag ? `--${s.flag}` : '',
    env: s.env ?? '',
    default: shownDefault(s),
    meaning: s.meaning,
  }));
}

export type ServiceName = 'terminal' | 'issuer' | 'authorizer';

/** gRPC and /metrics ports of `npm start` and of a server started on its own. */
export const SERVER_PORTS: Record<ServiceName, { grpc: number; metrics: number }> = {
  terminal: { grpc: 50051, metrics: 9451 },
  issuer: { grpc: 50052, metrics: 9452 },
  authorizer: { grpc: 50053, metrics: 9453 },
};

/** What every server reads: where it listens, its data, its logs, its transport. `prefix` names its own variables (ISSUER_PORT, ...). */
export function serverSettings(service: ServiceName, prefix: string, identity: string) {
  return {
    host: text('host', 'HOST', '127.0.0.1', 'Address the gRPC and /metrics listeners bind to (0.0.0.0 in a container).'),
    port: integer('port', `${prefix}_PORT`, SERVER_PORTS[service].grpc, 'gRPC port; 0 picks a free one (the server logs and reports the one it took).'),
    metricsPort: integer('metrics-port', `${prefix}_METRICS_PORT`, SERVER_PORTS[service].metrics, 'Port of the HTTP /metrics listener (Prometheus); 0 picks a free one.'),
    dataDir: text('data-dir', 'TAPCREDIT_DATA_DIR', 'data', 'Directory of the SQLite files, keys and development certificates, relative to the working directory.'),
    databaseUrl: optionalText('database-url', `${prefix}_DATABASE_URL`, 'SQLite file path, or a postgres:// URL for PostgreSQL.', `<data dir>/${service === 'terminal' ? 'terminal-<terminal id>' : service}.sqlite`),
    logLevel: text('log-level', 'LOG_LEVEL', 'info', 'pino log level: fatal, error, warn, info, debug, trace or silent.'),
    healthProbeIntervalMs: integer('health-probe-interval-ms', 'HEALTH_PROBE_INTERVAL_MS', 2000, 'Time between database probes of the gRPC health check (NOT_SERVING while the database does not answer).'),
    insecure: onSwitch('insecure', undefined, 'Plaintext without access control instead of mTLS; refused unless this server and its peers are on loopback. A flag only, never taken from the environment.'),
    certsDir: optionalText('certs-dir', 'TAPCREDIT_CERTS_DIR', 'Directory of the CA certificate and this server\'s certificate and key, as `npm run certs` writes them.', '<data dir>/certs'),
    tlsCa: optionalText('tls-ca', 'TAPCREDIT_TLS_CA', 'CA certificate(s) that sign every peer\'s certificate, PEM.', '<certs dir>/ca.pem'),
    tlsCert: optionalText('tls-cert', 'TAPCREDIT_TLS_CERT', `This server's certificate, PEM; it must name ${identity}.`, `<certs dir>/${service === 'terminal' ? 'terminal-<terminal id>' : service}.pem`),
    tlsKey: optionalText('tls-key', 'TAPCREDIT_TLS_KEY', "This server's private key, PEM.", `<certs dir>/${service === 'terminal' ? 'terminal-<terminal id>' : service}.key`),
  };
}

/** What replicas sharing one database set apart: their names in outbox claims, and how long a claim lasts. */
export const replicaSettings = () => ({
  replicaId: optionalText('replica-id', 'REPLICA_ID', 'This replica\'s name in outbox claims; replicas sharing a database must differ.', 'host/pid/random'),
  claimTtlMs: integer('claim-ttl-ms', 'CLAIM_TTL_MS', 30_000, 'How long an outbox claim lasts before another replica may take its work over.'),
});
