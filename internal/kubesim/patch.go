package kubesim

import (
	"fmt"
	"mime"
	"net/http"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// applyKubePatch applies a PATCH body to an object's JSON by its content
// type, as the apiserver does: JSON patch (RFC 6902), JSON merge patch
// (RFC 7386) and strategic merge patch (with the resource's Go type as
// schema). Server-side apply (application/apply-patch+yaml) is not
// simulated: 415, like any other type.
func applyKubePatch(res *kubeResource, contentType string, cur, patch []byte) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = contentType
	}
	var out []byte
	switch types.PatchType(mt) {
	case types.JSONPatchType:
		p, derr := jsonpatch.DecodePatch(patch)
		if derr != nil {
			return nil, apierrors.NewBadRequest(derr.Error())
		}
		out, err = p.Apply(cur)
	case types.MergePatchType:
		out, err = jsonpatch.MergePatch(cur, patch)
	case types.StrategicMergePatchType:
		out, err = strategicpatch.StrategicMergePatchUsingLookupPatchMeta(cur, patch, res.schema)
	default:
		return nil, unsupportedMediaType(mt)
	}
	if err != nil {
		// The apiserver's answer to a patch it cannot apply: 422 on the
		// field "patch".
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: res.group, Kind: res.kind}, "", field.ErrorList{field.Invalid(field.NewPath("patch"), string(patch), err.Error())})
	}
	return out, nil
}

// unsupportedMediaType is the apiserver's 415 for a patch type it does
// not accept.
func unsupportedMediaType(mt string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnsupportedMediaType,
		Reason:  metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (the lab's simulated API has no server-side apply; got %s)", mt),
	}}
}
