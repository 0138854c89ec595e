// The compiled contract (gen/descriptor.binpb, a FileDescriptorSet that
// `npm run generate` builds with buf) read for what the generated code does
// not carry: field behaviors. Used by the API doc generator and the contract
// tests.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createFileRegistry, fromBinary, getExtension, hasExtension, type FileRegistry } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema, type FieldDescriptorProto, type FileDescriptorSet } from '@bufbuild/protobuf/wkt';

export const DESCRIPTOR_SET = fileURLToPath(new URL('../gen/descriptor.binpb', import.meta.url));

/** google.api.FieldBehavior's values, as numbered in googleapis (and proto/google/api/field_behavior.proto). */
export enum FieldBehavior {
  OPTIONAL = 1,
  REQUIRED = 2,
  OUTPUT_ONLY = 3,
  INPUT_ONLY = 4,
  IMMUTABLE = 5,
}

export function readDescriptorSet(bytes: Uint8Array = readFileSync(DESCRIPTOR_SET)): FileDescriptorSet {
  return fromBinary(FileDescriptorSetSchema, bytes);
}

/** Reads each field's google.api.field_behavior option. */
export function fieldBehaviorReader(set: FileDescriptorSet): (field: FieldDescriptorProto) => FieldBehavior[] {
  const registry: FileRegistry = createFileRegistry(set);
  const extension = registry.getExtension('google.api.field_behavior');
  if (!extension) return () => [];
  return (field) => (field.options && hasExtension(field.options, extension) ? (getExtension(field.options, extension) as FieldBehavior[]) : []);
}

/** For each RPC ("package.Service/Method"), its request message's fields (proto names) and their behaviors. */
export function requestFieldBehaviors(set = readDescriptorSet()): Map<string, Record<string, FieldBehavior[]>> {
  const registry = createFileRegistry(set);
  const behaviors = fieldBehaviorReader(set);
  const byRpc = new Map<string, Record<string, FieldBehavior[]>>();
  for (const file of registry.files) {
    for (const service of file.services) {
      for (const method of service.methods) {
        byRpc.set(`${service.typeName}/${method.name}`, Object.fromEntries(method.input.fields.map((f) => [f.name, behaviors(f.proto)])));
      }
    }
  }
  return byRpc;
}
