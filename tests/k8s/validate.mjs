// Validates Kubernetes objects offline against the API's schemas, two ways:
//  - kubernetes-models: the model class of each apiVersion/kind validates the object against
//    the OpenAPI schema (required fields, types such as an integer port, enum values);
//  - @kubernetes/client-node's ObjectSerializer knows every field of every type: a field that
//    does not survive a deserialize/serialize round trip is unknown (a typo such as
//    `fsGroupp`), which kubernetes-models lets through and the API server would reject.
// Usage: node validate.mjs FILE...   (multi-document YAML; "-" reads stdin)
// Prints one line per object; exits 1 when any object is invalid or of an unknown kind.
import fs from "node:fs";
import { createRequire } from "node:module";
import YAML from "yaml";
// The package's index also loads its HTTP client, which needs a newer Node; the models do not.
import { ObjectSerializer } from "@kubernetes/client-node/dist/gen/models/ObjectSerializer.js";

const require = createRequire(import.meta.url);

function modelFor(apiVersion, kind) {
  // "apps/v1" -> kubernetes-models/apps/v1/<Kind>; core "v1" -> kubernetes-models/v1/<Kind>.
  if (!/^([a-z0-9.]+\/)?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Za-z]+$/.test(kind)) return null;
  try {
    return require(`kubernetes-models/${apiVersion}/${kind}`)[kind] || null;
  } catch {
    return null;
  }
}

// Paths of the fields of `original` that `known` lacks.
function unknownFields(original, known, path, out) {
  if (Array.isArray(original)) {
    original.forEach((item, i) => unknownFields(item, known?.[i], `${path}/${i}`, out));
  } else if (original !== null && typeof original === "object") {
    for (const key of Object.keys(original)) {
      if (known === null || typeof known !== "object" || !(key in known)) {
        out.push(`${path}/${key}`);
      } else {
        unknownFields(original[key], known[key], `${path}/${key}`, out);
      }
    }
  }
  return out;
}

function serializerType(apiVersion, kind) {
  const version = apiVersion.split("/").pop();  // "v1", "v2beta1"
  return `V${version.slice(1)}${kind}`;
}

let failures = 0;
let count = 0;
for (const file of process.argv.slice(2)) {
  const text = fs.readFileSync(file === "-" ? 0 : file, "utf8");
  for (const doc of YAML.parseAllDocuments(text)) {
    if (doc.errors.length > 0) {
      console.log(`invalid ${file}: YAML: ${doc.errors[0].message}`);
      failures++;
      continue;
    }
    const object = doc.toJS();
    if (object === null || object === undefined) continue;  // empty document
    count++;
    const where = `${file}: ${object.kind}/${object.metadata?.name}`;
    const Model = modelFor(String(object.apiVersion), String(object.kind));
    if (!Model) {
      console.log(`invalid ${where}: no schema for ${object.apiVersion} ${object.kind}`);
      failures++;
      continue;
    }
    const problems = [];
    try {
      new Model(object).validate();
    } catch (e) {
      const details = (e.errors || []).map((x) => `${x.instancePath} ${x.message}`);
      problems.push(...(details.length > 0 ? details : [e.message]));
    }
    const type = serializerType(String(object.apiVersion), String(object.kind));
    const roundTrip = ObjectSerializer.serialize(ObjectSerializer.deserialize(object, type), type);
    for (const path of unknownFields(object, roundTrip, "", [])) {
      problems.push(`${path} is not a field of ${type}`);
    }
    if (problems.length > 0) {
      console.log(`invalid ${where}: ${problems.join("; ")}`);
      failures++;
    } else {
      console.log(`valid ${where}`);
    }
  }
}
if (count === 0) {
  console.log("invalid: no objects found");
  failures++;
}
process.exit(failures > 0 ? 1 : 0);
