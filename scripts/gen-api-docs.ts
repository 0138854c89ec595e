// Writes docs/api.md, the API reference, from the comments in proto/ as buf
// compiled them into gen/descriptor.binpb (a FileDescriptorSet with source
// info). Never edit docs/api.md by hand: `npm run docs` regenerates it, and
// `npm run check:docs` (part of `npm test`) fails when it is stale.
//   tsx scripts/gen-api-docs.ts           write docs/api.md
//   tsx scripts/gen-api-docs.ts --check   exit 1 when docs/api.md differs
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromBinary } from '@bufbuild/protobuf';
import { status } from '@grpc/grpc-js';
import { ERROR_REASONS, RESULT_REASONS, type ReasonEntry } from '../common/error-reasons.js';
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorSetSchema,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  type FileDescriptorProto,
} from '@bufbuild/protobuf/wkt';

const root = fileURLToPath(new URL('..', import.meta.url));
import { DESCRIPTOR_SET, FieldBehavior, fieldBehaviorReader } from './descriptors.js';
export { DESCRIPTOR_SET };
export const API_DOC = `${root}docs/api.md`;

// Field numbers of descriptor.proto, for source-info paths.
const FILE_PACKAGE = 2;
const FILE_MESSAGE = 4;
const FILE_ENUM = 5;
const FILE_SERVICE = 6;
const MESSAGE_FIELD = 2;
const MESSAGE_NESTED = 3;
const MESSAGE_ENUM = 4;
const ENUM_VALUE = 2;
const SERVICE_METHOD = 2;

/** Packages documented, in this order: the services first, then what they share. */
const PACKAGE_ORDER = ['tapcredit.terminal.v1', 'tapcredit.issuer.v1', 'tapcredit.authorizer.v1', 'tapcredit.type.v1', 'google.rpc'];

class Comments {
  private readonly byPath = new Map<string, string>();

  constructor(file: FileDescriptorProto) {
    for (const loc of file.sourceCodeInfo?.location ?? []) {
      if (loc.leadingComments) this.byPath.set(loc.path.join('.'), clean(loc.leadingComments));
    }
  }

  get(path: number[]): string {
    return this.byPath.get(path.join('.')) ?? '';
  }
}

/** Strips the one space after `//` and surrounding blank lines. */
function clean(comment: string): string {
  return comment
    .split('\n')
    .map((line) => line.replace(/^ /, '').trimEnd())
    .join('\n')
    .trim();
}

/** A comment inside a table cell: one line, pipes escaped, paragraphs kept apart. */
function cell(text: string): string {
  return text
    .split(/\n\s*\n/)
    .map((p) => p.replace(/\s*\n\s*/g, ' '))
    .join('<br><br>')
    .replace(/\|/g, '\\|');
}

const anchor = (fullName: string) => `<a id="${fullName}"></a>`;
const link = (typeName: string) => {
  const full = typeName.replace(/^\./, '');
  return `[${full.split('.').pop()}](#${full})`;
};

const SCALARS: Partial<Record<FieldDescriptorProto_Type, string>> = {
  [FieldDescriptorProto_Type.DOUBLE]: 'double',
  [FieldDescriptorProto_Type.FLOAT]: 'float',
  [FieldDescriptorProto_Type.INT64]: 'int64',
  [FieldDescriptorProto_Type.UINT64]: 'uint64',
  [FieldDescriptorProto_Type.INT32]: 'int32',
  [FieldDescriptorProto_Type.FIXED64]: 'fixed64',
  [FieldDescriptorProto_Type.FIXED32]: 'fixed32',
  [FieldDescriptorProto_Type.BOOL]: 'bool',
  [FieldDescriptorProto_Type.STRING]: 'string',
  [FieldDescriptorProto_Type.BYTES]: 'bytes',
  [FieldDescriptorProto_Type.UINT32]: 'uint32',
  [FieldDescriptorProto_Type.SFIXED32]: 'sfixed32',
  [FieldDescriptorProto_Type.SFIXED64]: 'sfixed64',
  [FieldDescriptorProto_Type.SINT32]: 'sint32',
  [FieldDescriptorProto_Type.SINT64]: 'sint64',
};

/** Types outside the documented packages (well-known types) get no link. */
function typeRef(typeName: string, documented: Set<string>): string {
  const full = typeName.replace(/^\./, '');
  return documented.has(full) ? link(typeName) : `\`${full}\``;
}

function fieldType(field: FieldDescriptorProto, mapEntries: Map<string, DescriptorProto>, documented: Set<string>): string {
  const named = (f: FieldDescriptorProto) =>
    f.type === FieldDescriptorProto_Type.MESSAGE || f.type === FieldDescriptorProto_Type.ENUM ? typeRef(f.typeName, documented) : `\`${SCALARS[f.type]}\``;
  const entry = mapEntries.get(field.typeName.replace(/^\./, ''));
  if (entry) return `map<${named(entry.field[0])}, ${named(entry.field[1])}>`;
  const type = named(field);
  if (field.label === FieldDescriptorProto_Label.REPEATED) return `repeated ${type}`;
  if (field.proto3Optional) return `optional ${type}`;
  return type;
}

interface Context {
  /** The file's package; headings name types relative to it (Outer.Inner). */
  pkg: string;
  comments: Comments;
  out: string[];
  mapEntries: Map<string, DescriptorProto>;
  documented: Set<string>;
  behaviors: (field: FieldDescriptorProto) => FieldBehavior[];
}

const BEHAVIOR_LABELS: Record<FieldBehavior, string> = {
  [FieldBehavior.OPTIONAL]: 'Optional.',
  [FieldBehavior.REQUIRED]: 'Required.',
  [FieldBehavior.OUTPUT_ONLY]: 'Output only.',
  [FieldBehavior.INPUT_ONLY]: 'Input only.',
  [FieldBehavior.IMMUTABLE]: 'Immutable.',
};

/** A field's description: its behaviors (google.api.field_behavior) in bold, then its comment. */
function fieldDescription(ctx: Context, field: FieldDescriptorProto, path: number[]): string {
  const labels = ctx.behaviors(field).map((b) => `**${BEHAVIOR_LABELS[b]}**`);
  return [...labels, cell(ctx.comments.get(path))].filter(Boolean).join(' ');
}

function renderEnum(ctx: Context, e: EnumDescriptorProto, fullName: string, path: number[]): void {
  ctx.out.push(`${anchor(fullName)}`, `### enum ${fullName.slice(ctx.pkg.length + 1)}`, '');
  const comment = ctx.comments.get(path);
  if (comment) ctx.out.push(comment, '');
  ctx.out.push('| Value | Number | Description |', '| --- | --- | --- |');
  e.value.forEach((v, i) => ctx.out.push(`| \`${v.name}\` | ${v.number} | ${cell(ctx.comments.get([...path, ENUM_VALUE, i]))} |`));
  ctx.out.push('');
}

function renderMessage(ctx: Context, m: DescriptorProto, fullName: string, path: number[]): void {
  if (m.options?.mapEntry) return;
  ctx.out.push(`${anchor(fullName)}`, `### message ${fullName.slice(ctx.pkg.length + 1)}`, '');
  const comment = ctx.comments.get(path);
  if (comment) ctx.out.push(comment, '');
  if (m.field.length === 0) ctx.out.push('No fields.', '');
  else {
    ctx.out.push('| Field | Number | Type | Description |', '| --- | --- | --- | --- |');
    m.field.forEach((f, i) =>
      ctx.out.push(`| \`${f.name}\` | ${f.number} | ${fieldType(f, ctx.mapEntries, ctx.documented)} | ${fieldDescription(ctx, f, [...path, MESSAGE_FIELD, i])} |`),
    );
    ctx.out.push('');
  }
  m.nestedType.forEach((n, i) => renderMessage(ctx, n, `${fullName}.${n.name}`, [...path, MESSAGE_NESTED, i]));
  m.enumType.forEach((e, i) => renderEnum(ctx, e, `${fullName}.${e.name}`, [...path, MESSAGE_ENUM, i]));
}

/** Every message and enum full name, and the map-entry messages by name. */
function index(files: FileDescriptorProto[]): { documented: Set<string>; mapEntries: Map<string, DescriptorProto> } {
  const documented = new Set<string>();
  const mapEntries = new Map<string, DescriptorProto>();
  const walk = (m: DescriptorProto, prefix: string) => {
    const full = `${prefix}.${m.name}`;
    if (m.options?.mapEntry) mapEntries.set(full, m);
    else documented.add(full);
    m.nestedType.forEach((n) => walk(n, full));
    m.enumType.forEach((e) => documented.add(`${full}.${e.name}`));
  };
  for (const f of files) {
    f.messageType.forEach((m) => walk(m, f.package));
    f.enumType.forEach((e) => documented.add(`${f.package}.${e.name}`));
  }
  return { documented, mapEntries };
}

/** The whole reference, from a serialized FileDescriptorSet with source info. */
/** The catalogue's reasons an RPC ("Service.Method") can answer, beside those of every RPC. */
const reasonsOf = (rpc: string) =>
  (Object.entries(ERROR_REASONS) as [string, ReasonEntry][]).filter(([, e]) => e.rpcs.includes(rpc));

/** Every reason of common/error-reasons.ts, with its code and the RPCs that answer it. */
function renderErrorCatalogue(out: string[]): void {
  out.push(anchor('errors'), '## Errors', '');
  out.push(
    'Every reason a server puts in the ErrorInfo of a failed call (`common/error-reasons.ts`; servers make errors from that table only). The ErrorInfo domain names the server: `terminal.tapcredit`, `issuer.tapcredit`, `authorizer.tapcredit`. A reason is stable: clients branch on it, never on the message.',
    '',
    '| code | reason | when | RPCs |',
    '| --- | --- | --- | --- |',
  );
  for (const [reason, e] of Object.entries(ERROR_REASONS) as [string, ReasonEntry][]) {
    const rpcs = e.rpcs[0] === '*' ? 'every RPC' : e.rpcs.join(', ');
    out.push(`| ${status[e.code]} | \`${reason}\` | ${cell(e.when)} | ${rpcs} |`);
  }
  out.push('', '### Reasons inside results', '', 'Batch RPCs answer per item, so one bad item does not fail the others; these reasons come in the item\'s result, not as the call\'s error.', '');
  out.push('| RPC | reason | when |', '| --- | --- | --- |');
  for (const [reason, r] of Object.entries(RESULT_REASONS)) out.push(`| ${r.rpc} | \`${reason.replace(/ \(.*\)$/, '')}\` | ${cell(r.when)} |`);
  out.push('');
}

export function renderApiDoc(descriptorSet: Uint8Array): string {
  const set = fromBinary(FileDescriptorSetSchema, descriptorSet);
  const files = set.file
    .filter((f) => PACKAGE_ORDER.includes(f.package))
    .sort((a, b) => PACKAGE_ORDER.indexOf(a.package) - PACKAGE_ORDER.indexOf(b.package) || a.name.localeCompare(b.name));
  const { documented, mapEntries } = index(files);
  const behaviors = fieldBehaviorReader(set);
  const out: string[] = [
    '# tapcredit API reference',
    '',
    '<!-- Generated by scripts/gen-api-docs.ts from the comments in proto/ (via gen/descriptor.binpb). Do not edit: run `npm run docs`. -->',
    '',
    'Every server also serves `grpc.health.v1.Health` and server reflection (`grpc.reflection.v1` and `v1alpha`), so grpcurl and `buf curl` work without proto files.',
    'Errors are `google.rpc.Status` values in the `grpc-status-details-bin` trailer, carrying an [ErrorInfo](#google.rpc.ErrorInfo) with a stable reason and, for bad input, a [BadRequest](#google.rpc.BadRequest) with field violations.',
    'A field marked **Required.** (`google.api.field_behavior` in the proto) must be set: a request without it is refused `INVALID_ARGUMENT` with a field violation naming it, and every such field missing is named in the one answer.',
    '',
    '## Services',
    '',
  ];
  for (const f of files) {
    for (const s of f.service) out.push(`- [${f.package}.${s.name}](#${f.package}.${s.name}) (\`${f.name}\`)`);
  }
  out.push('');

  for (const file of files) {
    const comments = new Comments(file);
    const ctx: Context = { pkg: file.package, comments, out, mapEntries, documented, behaviors };
    out.push(`## ${file.package} — \`${file.name}\``, '');
    const packageComment = comments.get([FILE_PACKAGE]);
    if (packageComment) out.push(packageComment, '');
    file.service.forEach((s, si) => {
      const full = `${file.package}.${s.name}`;
      out.push(anchor(full), `### service ${s.name}`, '');
      const comment = comments.get([FILE_SERVICE, si]);
      if (comment) out.push(comment, '');
      s.method.forEach((m, mi) => {
        const stream = (flag: boolean | undefined) => (flag ? 'stream ' : '');
        out.push(
          `${anchor(`${full}.${m.name}`)}`,
          `#### ${m.name}`,
          '',
          `\`rpc ${m.name}(${stream(m.clientStreaming)}${m.inputType.replace(/^\./, '')}) returns (${stream(m.serverStreaming)}${m.outputType.replace(/^\./, '')})\``,
          '',
          `Request: ${typeRef(m.inputType, documented)} · Response: ${typeRef(m.outputType, documented)}`,
          '',
        );
        const methodComment = comments.get([FILE_SERVICE, si, SERVICE_METHOD, mi]);
        if (methodComment) out.push(methodComment, '');
        const own = reasonsOf(`${s.name}.${m.name}`);
        if (own.length > 0) {
          out.push('Errors of this RPC (beside [those of every RPC](#errors)):', '', '| code | reason | when |', '| --- | --- | --- |');
          for (const [reason, e] of own) out.push(`| ${status[e.code]} | \`${reason}\` | ${cell(e.when)} |`);
          out.push('');
        }
      });
    });
    file.messageType.forEach((m, i) => renderMessage(ctx, m, `${file.package}.${m.name}`, [FILE_MESSAGE, i]));
    file.enumType.forEach((e, i) => renderEnum(ctx, e, `${file.package}.${e.name}`, [FILE_ENUM, i]));
  }
  renderErrorCatalogue(out);
  return `${out.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd()}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const fresh = renderApiDoc(readFileSync(DESCRIPTOR_SET));
  if (process.argv.includes('--check')) {
    let committed = '';
    try {
      committed = readFileSync(API_DOC, 'utf8');
    } catch {
      // missing counts as stale
    }
    if (committed !== fresh) {
      console.error('docs/api.md is out of date with proto/: run `npm run docs` (after `npm run generate`) and commit it.');
      process.exit(1);
    }
    console.log('docs/api.md is up to date with proto/');
  } else {
    mkdirSync(dirname(API_DOC), { recursive: true });
    writeFileSync(API_DOC, fresh);
    console.log(`wrote ${API_DOC}`);
  }
}
