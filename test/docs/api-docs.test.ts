// docs/api.md is generated from the proto comments and kept in step with them.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { status } from '@grpc/grpc-js';
import { expect } from 'chai';
import { ERROR_REASONS, RESULT_REASONS } from '../../common/error-reasons.js';
import { API_DOC, DESCRIPTOR_SET, renderApiDoc } from '../../scripts/gen-api-docs.js';

describe('API reference (docs/api.md)', () => {
  const descriptorSet = readFileSync(DESCRIPTOR_SET);
  const set = fromBinary(FileDescriptorSetSchema, descriptorSet);
  const doc = readFileSync(API_DOC, 'utf8');

  it('is what the generator makes of the current protos (run `npm run docs` when this fails)', () => {
    expect(doc === renderApiDoc(descriptorSet), 'docs/api.md is stale').to.equal(true);
  });

  it('lists in the error catalogue only RPCs the services have, and documents every reason with its code', () => {
    const rpcs = new Set(set.file.filter((f) => f.package.startsWith('tapcredit.')).flatMap((f) => f.service.flatMap((s) => s.method.map((m) => `${s.name}.${m.name}`))));
    for (const [reason, e] of Object.entries(ERROR_REASONS)) {
      for (const rpc of e.rpcs) if (rpc !== '*') expect(rpcs.has(rpc), `${reason} names ${rpc}`).to.equal(true);
      expect(doc).to.include(`| ${status[e.code]} | \`${reason}\` |`);
    }
    for (const r of Object.values(RESULT_REASONS)) expect(rpcs.has(r.rpc), r.rpc).to.equal(true);
  });

  it('documents every RPC and message of the tapcredit services with its proto comment', () => {
    let rpcs = 0;
    for (const file of set.file.filter((f) => f.package.startsWith('tapcredit.'))) {
      const comment = (path: number[]) =>
        file.sourceCodeInfo!.location.find((l) => l.path.join('.') === path.join('.'))?.leadingComments?.trim().split('\n')[0].trim();
      file.service.forEach((s, si) =>
        s.method.forEach((m, mi) => {
          rpcs++;
          expect(doc).to.include(`<a id="${file.package}.${s.name}.${m.name}"></a>\n#### ${m.name}`);
          const first = comment([6, si, 2, mi]);
          expect(first, `${s.name}.${m.name} has a comment`).to.be.a('string').and.not.equal('');
          expect(doc).to.include(first!);
        }),
      );
      file.messageType.forEach((m, i) => {
        expect(doc).to.include(`<a id="${file.package}.${m.name}"></a>\n### message ${m.name}`);
        expect(doc).to.include(comment([4, i])!);
      });
    }
    expect(rpcs).to.be.greaterThan(10);
  });

  it('changes when a proto comment changes, so a stale file is caught', () => {
    const edited = fromBinary(FileDescriptorSetSchema, descriptorSet);
    const loc = edited.file.find((f) => f.name.endsWith('terminal.proto'))!.sourceCodeInfo!.location.find((l) => l.path.join('.') === '6.0')!;
    loc.leadingComments = ' A different description of TerminalService.\n';
    const rendered = renderApiDoc(toBinary(FileDescriptorSetSchema, edited));
    expect(rendered).to.include('A different description of TerminalService.');
    expect(rendered).to.not.equal(doc);
  });

  it('has a --check mode that passes on the committed file', () => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', 'scripts/gen-api-docs.ts', '--check'], { encoding: 'utf8' });
    expect(out).to.include('up to date');
  });
});
