// A terminal's settings: flag, environment variable, default and meaning of
// each. main.ts reads them, startTerminal takes its defaults from them, and
// docs/configuration.md is generated from them.
import { SERVER_PORTS, integer, optionalText, serverSettings, text } from '../common/settings.js';
import { DEFAULT_FORWARD_BATCH_SIZE, DEFAULT_FORWARD_INTERVAL_MS } from './forwarder.js';

export const TERMINAL_SETTINGS = {
  ...serverSettings('terminal', 'TERMINAL', 'spiffe://tapcredit/terminal/<terminal id>'),
  terminalId: text('terminal-id', 'TERMINAL_ID', 'T0001', 'This terminal\'s id, without \':\' (tap ids are <terminal id>:<sequence>).'),
  issuerCode: text('issuer-code', 'ISSUER_CODE', 'CITY1', 'Code of the issuer whose cards this terminal takes.'),
  issuerAddress: text('issuer-address', 'ISSUER_ADDRESS', `127.0.0.1:${SERVER_PORTS.issuer.grpc}`, 'host:port of the issuer, where taps go; several comma-separated for its replicas (calls go round robin).'),
  masterKeyFile: optionalText('master-key-file', 'TAPCREDIT_MASTER_KEY_FILE', 'The issuer\'s card master key in hex, as the terminal\'s SAM holds it. Created only by `npm run keys` (or `npm start`).', '<data dir>/keys/master.key'),
  masterKey: optionalText(undefined, 'TAPCREDIT_MASTER_KEY', 'The card master key itself, in hex; wins over the file.'),
  issuerPublicKeyFile: optionalText('issuer-public-key-file', 'TAPCREDIT_ISSUER_PUBLIC_KEY_FILE', 'The issuer\'s Ed25519 public key (SPKI PEM) that verifies credit flags offline.', '<data dir>/keys/issuer-public.pem'),
  line: optionalText('line', 'TERMINAL_LINE', 'Line or route this terminal serves; recorded on each tap, and required with a tariff.', 'none'),
  tariffFile: optionalText('tariff-file', 'TARIFF_FILE', 'Tariff file: the fare of each line (see README, Risk control).', 'none'),
  tariff: optionalText('tariff', 'TARIFF', 'The tariff itself, as the file would hold it.', 'none'),
  fareMinorUnits: integer('fare-minor-units', 'FARE_MINOR_UNITS', 200, 'Flat fare per ride in minor units, when there is no tariff.'),
  currency: text('currency', 'CURRENCY', 'CNY', 'Currency of the flat fare, ISO 4217.'),
  answerTimeoutMs: integer('answer-timeout-ms', 'TERMINAL_ANSWER_TIMEOUT_MS', 5000, 'How long a card has to answer each reader command (the life of a challenge); a later answer is declined ANSWER_TIMEOUT.'),
  repeatWindowMs: integer('repeat-window-ms', 'TERMINAL_REPEAT_WINDOW_MS', 60_000, 'A card presented again within this time after an accepted tap that its record shows never completed (the gate did not open) goes through without a new charge, once.'),
  forwardBatchSize: integer('forward-batch-size', 'FORWARD_BATCH_SIZE', DEFAULT_FORWARD_BATCH_SIZE, 'Taps per TapReport call to the issuer.'),
  forwardIntervalMs: integer('forward-interval-ms', 'FORWARD_INTERVAL_MS', DEFAULT_FORWARD_INTERVAL_MS, 'Poll interval of the forwarder when idle.'),
  forwardWindowMs: integer('forward-window-ms', 'FORWARD_WINDOW_MS', 0, 'How long after a tap is accepted the forwarder waits for more to join the batch; 0 sends at once (a gate takes about a tap a second).'),
};
