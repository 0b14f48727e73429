package httpapi

import (
	"reflect"
	"strings"
)

// codecJSON turns a value of internal/wire into what encoding/json writes
// with the native protocol's field names (the codec tags): status and
// members answer with the very fields docs/protocol.md describes. Embedded
// structs without a tag are inlined; omitempty is honoured.
func codecJSON(v any) any {
	return toJSON(reflect.ValueOf(v))
}

func toJSON(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return toJSON(v.Elem())
	case reflect.Struct:
		m := map[string]any{}
		addFields(m, v)
		return m
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return v.Interface() // bytes: base64, as encoding/json writes them
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = toJSON(v.Index(i))
		}
		return out
	}
	return v.Interface()
}

func addFields(m map[string]any, v reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("codec")
		if tag == "" && f.Anonymous && f.Type.Kind() == reflect.Struct {
			addFields(m, v.Field(i))
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if opts == "omitempty" && v.Field(i).IsZero() {
			continue
		}
		m[name] = toJSON(v.Field(i))
	}
}
